"""Token streams: exposure-exact training windows, and evaluation rows.

Training for E exposures is E rounds; each round emits every person's unit (end-of-text
+ biography) once, in a fresh keyed random order (docs/design.md §4, §2.5).
bioS renders a fresh biography in every round; bioS-simple repeats its one rendering.
The units are concatenated and cut into windows of 512 tokens, B windows a batch;
steps = ceil(total tokens / (B x 512)), and the last batch is padded. Everything is a pure
function of the seeds, so a stream can start at any step and produce exactly the batches
an uninterrupted stream would.
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from bioknow.base.progress import Progress
from bioknow.data import keyed
from bioknow.data.render.tokens import FragmentTable, Units

WINDOW = 512
ROUND_STREAM = 30
EVAL_EXPOSURE = 2**40  # the key of bioS evaluation renderings: never a training round
JUNK_STREAM = 31
CHUNK = 1 << 15  # people assembled at a time, at most
CHUNK_TOKENS = 1 << 22  # and about this many tokens at a time (long bioD units)


@dataclass(frozen=True)
class Position:
    """The next token of a stream: `offset` tokens into the unit of the person at place
    `index` of round `round`'s order."""

    round: int
    index: int
    offset: int = 0


@dataclass
class Batch:
    step: int
    tokens: np.ndarray  # [B, window] int32; each row's padding is end-of-text
    labels: np.ndarray  # [B, window] uint8 label ids of render.tokens.LABELS
    lengths: np.ndarray  # [B] tokens of each row before its padding
    end: Position  # where the (useful) stream goes on after this batch: save it to resume
    junk: np.ndarray | None = None  # [B] bool: rows of junk data (mixtures only)

    @property
    def valid(self) -> int:
        return int(self.lengths.sum())


def pack(tokens: np.ndarray, labels: np.ndarray, rows: int, window: int, pad: int):
    """Cut a run of tokens into `rows` windows, row-major, padding the rest: the
    [rows, window] tokens and labels, and each row's length."""
    out = np.full(rows * window, pad, dtype=np.int32)
    out_labels = np.zeros(rows * window, dtype=np.uint8)
    out[: len(tokens)], out_labels[: len(tokens)] = tokens, labels
    lengths = np.clip(len(tokens) - np.arange(rows) * window, 0, window)
    return out.reshape(rows, window), out_labels.reshape(rows, window), lengths


class Cursor:
    """Reads a training stream from a position on, any number of tokens at a time."""

    def __init__(self, stream: "TrainStream", start: Position):
        self.stream, self.chunks = stream, stream.chunks(start)
        self._next()
        self.at = start.offset if self.units is not None else 0

    def _next(self) -> None:
        self.round, self.lo, self.units = next(self.chunks, (self.stream.exposures, 0, None))
        self.at = 0

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The next n tokens and their labels (fewer only at the end of the stream)."""
        tokens, labels = [np.zeros(0, np.int32)], [np.zeros(0, np.uint8)]
        while n > 0 and self.units is not None:
            stop = min(self.at + n, len(self.units.tokens))
            tokens.append(self.units.tokens[self.at : stop])
            labels.append(self.units.labels[self.at : stop])
            n, self.at = n - (stop - self.at), stop
            if self.at == len(self.units.tokens):
                self._next()
        return np.concatenate(tokens), np.concatenate(labels)

    @property
    def position(self) -> Position:
        if self.units is None:
            return Position(self.stream.exposures, 0)
        u = int(np.searchsorted(self.units.offsets, self.at, side="right")) - 1
        return Position(self.round, self.lo + u, self.at - int(self.units.offsets[u]))


class TrainStream:
    def __init__(
        self,
        table: FragmentTable,
        exposures: int,
        batch: int,
        seed: int,
        online: bool,
        window: int = WINDOW,
    ):
        if exposures < 1 or batch < 1 or window < 2:
            raise ValueError("exposures and batch must be >= 1, window >= 2")
        self.table, self.exposures, self.batch, self.window = table, exposures, batch, window
        self.seed, self.online = seed, online
        self.n = len(table.population)
        longest = int(table.lengths(np.arange(min(self.n, 256)), 0).max())
        self.chunk = max(1, min(CHUNK, CHUNK_TOKENS // longest))

    def key(self, round: int) -> int:
        """The rendering key of a round: the round itself (bioS), always 0 (bioS-simple)."""
        return round if self.online else 0

    def order(self, round: int) -> np.ndarray:
        return keyed.permute(np.arange(self.n), self.n, self.seed, ROUND_STREAM, round)

    def round_lengths(self, round: int) -> np.ndarray:
        """Unit lengths of a round, in the round's order."""
        return self.table.lengths(self.order(round), self.key(round))

    @cached_property
    def round_tokens(self) -> np.ndarray:
        """Tokens in each round (exact)."""
        if not self.online:
            one = int(self.table.lengths(np.arange(self.n), 0).sum())
            return np.full(self.exposures, one, dtype=np.int64)
        totals = np.empty(self.exposures, dtype=np.int64)
        people = np.arange(self.n)
        big = self.exposures * self.n >= 5e7
        with Progress(self.exposures, "counting tokens", "round", enabled=big) as bar:
            for r in range(self.exposures):
                totals[r] = self.table.lengths(people, self.key(r)).sum()
                bar.update(1)
        return totals

    @property
    def total_tokens(self) -> int:
        return int(self.round_tokens.sum())

    @property
    def steps(self) -> int:
        return math.ceil(self.total_tokens / (self.batch * self.window))

    def position_at(self, step: int) -> Position:
        """Where batch `step` begins."""
        return self.position_of(step * self.batch * self.window)

    def position_of(self, token: int) -> Position:
        """Where the stream's token number `token` is."""
        ends = np.cumsum(self.round_tokens)
        r = int(np.searchsorted(ends, token, side="right"))
        if r >= self.exposures:
            return Position(self.exposures, 0)
        within = token - (int(ends[r - 1]) if r else 0)
        cumulative = np.cumsum(self.round_lengths(r))
        index = int(np.searchsorted(cumulative, within, side="right"))
        return Position(r, index, within - (int(cumulative[index - 1]) if index else 0))

    def chunks(self, start: Position) -> Iterator[tuple[int, int, Units]]:
        """(round, first index, units) from `start` to the end of the last round; the first
        chunk's units still include the `start.offset` tokens already consumed."""
        index = start.index
        for r in range(start.round, self.exposures):
            order = self.order(r)
            for lo in range(index, self.n, self.chunk):
                yield r, lo, self.table.assemble(order[lo : lo + self.chunk], self.key(r))
            index = 0

    def batches(self, start_step: int = 0, start: Position | None = None) -> Iterator[Batch]:
        """Batches from `start_step` (at `start`, if known, else computed) to the end."""
        cursor = Cursor(self, start or self.position_at(start_step))
        for step in range(start_step, self.steps):
            tokens, labels = cursor.take(self.batch * self.window)
            packed = pack(tokens, labels, self.batch, self.window, self.table.eot)
            yield Batch(step, *packed, cursor.position)


class JunkSource:
    """Junk windows: units of a population of N' people that is computed per person and
    never stored (docs/design.md §2.4, junk data), from `table` (`Dataset.junk_table`).
    Junk window m is a pure function of m: units of people drawn with replacement, keyed
    by (m, j), cut at the window's end."""

    def __init__(self, table, window: int = WINDOW):
        self.table, self.window = table, window
        self.seed, self.n = table.population.seed, len(table.population)
        typical = np.diff(table.assemble(np.arange(min(self.n, 16)), 0).offsets).mean()
        self.per_round = int(window // typical) + 2  # units drawn per window and round

    def windows(self, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Junk windows number m: tokens and labels, [len(m), window]."""
        m = np.asarray(m, dtype=np.int64)
        tokens = np.zeros((len(m), self.window), dtype=np.int32)
        labels = np.zeros((len(m), self.window), dtype=np.uint8)
        filled = np.zeros(len(m), dtype=np.int64)
        per_round = self.per_round  # any number gives the same windows, this one quickly
        column = np.arange(self.window)
        for first in range(0, 1 << 20, per_round):
            short = np.flatnonzero(filled < self.window)
            if not len(short):
                return tokens, labels
            key = (m[short, None] << 20) + np.arange(first, first + per_round)  # unit j of m
            people = keyed.uniform_int(self.n, self.seed, JUNK_STREAM, key).ravel()
            units = self.table.assemble(people, key.ravel())
            starts = units.offsets[:-1:per_round]  # a window's units are contiguous
            take = np.minimum(
                self.window - filled[short], units.offsets[per_round::per_round] - starts
            )
            row, col = np.nonzero(column < take[:, None])
            source = starts[row] + col
            tokens[short[row], filled[short][row] + col] = units.tokens[source]
            labels[short[row], filled[short][row] + col] = units.labels[source]
            filled[short] += take
        raise RuntimeError("junk units too short to fill a window")


def mixed_windows(useful_tokens: int, fraction: float, window: int = WINDOW) -> int:
    """Windows of a mixture, useful and junk, up to its last useful one: the least W whose
    first W windows hold ceil(useful_tokens / window) useful ones (floor(W F) are junk)."""
    useful = math.ceil(useful_tokens / window)
    windows = max(0, math.floor(useful / (1 - fraction)) - 2)
    while windows - math.floor(windows * fraction) < useful:
        windows += 1
    return windows


class MixedStream:
    """Useful and junk windows: window w is junk when floor((w + 1) F) > floor(w F), so
    the first W windows hold floor(W F) junk ones; each window is all useful or all junk.
    Exposures count the useful data only: the run ends with its last useful window."""

    def __init__(self, useful: TrainStream, junk: JunkSource, fraction: float):
        if not 0 <= fraction < 1:
            raise ValueError("the junk fraction must be in [0, 1)")
        self.useful, self.junk, self.fraction = useful, junk, fraction
        self._junk_block: tuple[int, tuple | None] = (0, None)  # first window number, windows
        self.batch, self.window = useful.batch, useful.window
        self.windows = mixed_windows(useful.total_tokens, fraction, self.window)

    JUNK_BLOCK = 1024  # junk windows made at a time: large arrays amortize numpy's overhead

    def junk_windows(self, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Junk windows m (consecutive numbers), from a block made ahead of time."""
        first, block = self._junk_block
        if block is None or m[0] < first or m[-1] >= first + self.JUNK_BLOCK:
            first = int(m[0])
            block = self.junk.windows(np.arange(first, first + self.JUNK_BLOCK))
            self._junk_block = first, block
        return block[0][m - first], block[1][m - first]

    def junk_before(self, w):
        return np.floor(np.asarray(w) * self.fraction).astype(np.int64)

    @property
    def table(self) -> FragmentTable:
        return self.useful.table

    @property
    def total_tokens(self) -> int:
        return self.useful.total_tokens

    @property
    def steps(self) -> int:
        return math.ceil(self.windows / self.batch)

    def position_at(self, step: int) -> Position:
        w = step * self.batch
        return self.useful.position_of((w - int(self.junk_before(w))) * self.window)

    def batches(self, start_step: int = 0, start: Position | None = None) -> Iterator[Batch]:
        cursor = Cursor(self.useful, start or self.position_at(start_step))
        for step in range(start_step, self.steps):
            w = np.arange(step * self.batch, (step + 1) * self.batch)
            junk = (self.junk_before(w + 1) > self.junk_before(w)) & (w < self.windows)
            useful = ~junk & (w < self.windows)
            tokens = np.full((self.batch, self.window), self.useful.table.eot, dtype=np.int32)
            labels = np.zeros((self.batch, self.window), dtype=np.uint8)
            lengths = np.zeros(self.batch, dtype=np.int64)
            rows = int(useful.sum())
            taken, taken_labels = cursor.take(rows * self.window)
            packed = pack(taken, taken_labels, rows, self.window, self.useful.table.eot)
            tokens[useful], labels[useful], lengths[useful] = packed
            if junk.any():
                tokens[junk], labels[junk] = self.junk_windows(self.junk_before(w[junk]))
                lengths[junk] = self.window
            yield Batch(step, tokens, labels, lengths, cursor.position, junk)


@dataclass
class EvalBatch:
    people: np.ndarray  # [b]
    tokens: np.ndarray  # [b, length] int32: end-of-text, the biography, then end-of-text padding
    labels: np.ndarray  # [b, length] uint8 (padding: 0, "other")
    lengths: np.ndarray  # [b] tokens before padding


def eval_batches(
    table: FragmentTable, people, batch: int, exposure: int, width: int | None = None
) -> Iterator[EvalBatch]:
    """One unit per row from position 0, `batch` people at a time, in the given order;
    rows padded to the longest unit of the batch, or with `width` to that many columns
    and every batch to `batch` rows (static shapes, for a compiled scorer: the extra rows
    are empty, their people not listed)."""
    people = np.asarray(people, dtype=np.int64)
    for lo in range(0, len(people), batch):
        some = people[lo : lo + batch]
        units = table.assemble(some, exposure)
        lengths = np.diff(units.offsets)
        if width is not None:
            lengths = np.concatenate([lengths, np.zeros(batch - len(some), dtype=lengths.dtype)])
        column = np.arange(width or int(lengths.max()))
        inside = column < lengths[:, None]
        starts = np.concatenate([units.offsets[:-1], np.zeros(len(lengths) - len(some), int)])
        source = np.minimum(starts[:, None] + column, len(units.tokens) - 1)
        tokens = np.where(inside, units.tokens[source], table.eot).astype(np.int32)
        labels = np.where(inside, units.labels[source], 0).astype(np.uint8)
        yield EvalBatch(some, tokens, labels, lengths)


def sample_people(n: int, k: int | None, seed: int) -> np.ndarray:
    """All people (k None), or a seeded sample of k of them, in increasing order."""
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(keyed.permute(np.arange(k), n, seed, ROUND_STREAM, EVAL_EXPOSURE))
