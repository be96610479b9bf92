"""Token streams: exposure-exact training windows, and evaluation rows.

Training for E exposures is E rounds; each round emits every person's unit (end-of-text
+ biography) once, in a fresh keyed random order (DESIGN section 3, SPEC section 2.5).
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
from tqdm import tqdm

from bioknow import keyed
from bioknow.render.tokens import FragmentTable, Units

WINDOW = 512
ROUND_STREAM = 30
EVAL_EXPOSURE = 2**40  # the key of bioS evaluation renderings: never a training round
CHUNK = 1 << 15  # people assembled at a time


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
    tokens: np.ndarray  # [B, window] int32; after `valid` tokens (row-major): end-of-text
    labels: np.ndarray  # [B, window] uint8 label ids of render.tokens.LABELS
    valid: int
    end: Position  # where the next batch starts: save it to resume


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
        bar = tqdm(
            range(self.exposures),
            desc="counting tokens",
            unit="round",
            disable=self.exposures * self.n < 5e7,
        )
        for r in bar:
            totals[r] = self.table.lengths(people, self.key(r)).sum()
        return totals

    @property
    def total_tokens(self) -> int:
        return int(self.round_tokens.sum())

    @property
    def steps(self) -> int:
        return math.ceil(self.total_tokens / (self.batch * self.window))

    def position_at(self, step: int) -> Position:
        """Where batch `step` begins."""
        target = step * self.batch * self.window
        ends = np.cumsum(self.round_tokens)
        r = int(np.searchsorted(ends, target, side="right"))
        if r >= self.exposures:
            return Position(self.exposures, 0)
        within = target - (int(ends[r - 1]) if r else 0)
        cumulative = np.cumsum(self.round_lengths(r))
        index = int(np.searchsorted(cumulative, within, side="right"))
        return Position(r, index, within - (int(cumulative[index - 1]) if index else 0))

    def chunks(self, start: Position) -> Iterator[tuple[int, int, Units]]:
        """(round, first index, units) from `start` to the end of the last round; the first
        chunk's units still include the `start.offset` tokens already consumed."""
        index = start.index
        for r in range(start.round, self.exposures):
            order = self.order(r)
            for lo in range(index, self.n, CHUNK):
                yield r, lo, self.table.assemble(order[lo : lo + CHUNK], self.key(r))
            index = 0

    def batches(self, start_step: int = 0, start: Position | None = None) -> Iterator[Batch]:
        """Batches from `start_step` (at `start`, if known, else computed) to the end."""
        start = start or self.position_at(start_step)
        need = self.batch * self.window
        chunks = self.chunks(start)
        r, lo, units = next(chunks, (self.exposures, 0, None))
        cursor = int(units.offsets[0]) + start.offset if units is not None else 0
        for step in range(start_step, self.steps):
            tokens = np.full(need, self.table.eot, dtype=np.int32)
            labels = np.zeros(need, dtype=np.uint8)
            filled = 0
            while filled < need and units is not None:
                take = min(need - filled, len(units.tokens) - cursor)
                tokens[filled : filled + take] = units.tokens[cursor : cursor + take]
                labels[filled : filled + take] = units.labels[cursor : cursor + take]
                filled, cursor = filled + take, cursor + take
                if cursor == len(units.tokens):
                    r, lo, units = next(chunks, (self.exposures, 0, None))
                    cursor = 0
            if units is None:
                end = Position(self.exposures, 0)
            else:
                u = int(np.searchsorted(units.offsets, cursor, side="right")) - 1
                end = Position(r, lo + u, cursor - int(units.offsets[u]))
            shape = (self.batch, self.window)
            yield Batch(step, tokens.reshape(shape), labels.reshape(shape), filled, end)


@dataclass
class EvalBatch:
    people: np.ndarray  # [b]
    tokens: np.ndarray  # [b, length] int32: end-of-text, the biography, then end-of-text padding
    labels: np.ndarray  # [b, length] uint8 (padding: 0, "other")
    lengths: np.ndarray  # [b] tokens before padding


def eval_batches(table: FragmentTable, people, batch: int, exposure: int) -> Iterator[EvalBatch]:
    """One unit per row from position 0, `batch` people at a time, in the given order."""
    people = np.asarray(people, dtype=np.int64)
    for lo in range(0, len(people), batch):
        some = people[lo : lo + batch]
        units = table.assemble(some, exposure)
        lengths = np.diff(units.offsets)
        width = int(lengths.max())
        column = np.arange(width)
        inside = column < lengths[:, None]
        source = np.minimum(units.offsets[:-1, None] + column, len(units.tokens) - 1)
        tokens = np.where(inside, units.tokens[source], table.eot).astype(np.int32)
        labels = np.where(inside, units.labels[source], 0).astype(np.uint8)
        yield EvalBatch(some, tokens, labels, lengths)


def sample_people(n: int, k: int | None, seed: int) -> np.ndarray:
    """All people (k None), or a seeded sample of k of them, in increasing order."""
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(keyed.permute(np.arange(k), n, seed, ROUND_STREAM, EVAL_EXPOSURE))
