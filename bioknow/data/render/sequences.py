"""Random token sequences: the data of Morris et al. 2025 ("How much do language models
memorize?", arXiv 2505.24832, Sec. 3) as a bioknow dataset variant.

N sequences of S symbols, each symbol drawn uniformly and independently from an
alphabet of V (a counter-based draw keyed by (seed, sequence, position),
`bioknow.data.keyed`). Symbol j is the text `<|tj|>`, as bioD's alphabet, and one token; a
sequence is written without spaces. A unit (one exposure) is the end-of-text token and
then the S symbols, so a sequence is scored from position 0 as a biography is. Nothing
about one sequence can be predicted from the others: every bit a model holds about them
is memorized, at most N S log2 V bits.

The tokenizer holds the end-of-text token and the V symbols (a word-level vocabulary),
padded with unused special tokens to a multiple of 64, and nothing else, so that a small
model's embedding stays small. Each token is labelled "symbol", except the first
ceil(log_V N) symbols, "prompt": greedy decoding cannot tell the N sequences apart before
it has seen that many (from the end-of-text token alone it can produce only one), so the
evaluation counts a sequence reproduced when the rest follows from that prompt.

A unit is at most one training window (S <= 511), so the model always sees a whole
sequence in its context when it is evaluated; with S + 1 dividing 512 (S = 63, 127, ...)
no sequence is ever cut by a window boundary in training.
"""

import math
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer, decoders, models

from bioknow.base import validate
from bioknow.base.errors import InputError
from bioknow.base.progress import Progress
from bioknow.data import keyed
from bioknow.data import tokenizer as bpe
from bioknow.data.render.biod import symbols as symbol_texts
from bioknow.data.render.tokens import LABEL, Units
from bioknow.data.stream import WINDOW

SEQUENCE_STREAM = 50  # stream id of the keyed draws; stable forever, datasets depend on it
MAX_SYMBOLS = 40_000  # as bioD's alphabet
MAX_LENGTH = WINDOW - 1  # a unit (end-of-text + the sequence) fits one window
CHUNK = 1 << 16  # sequences drawn or written at a time
SYMBOL = np.uint8(LABEL["symbol"])
PROMPT = np.uint8(LABEL["prompt"])


@dataclass(frozen=True)
class RandomParams:
    """S symbols per sequence, V symbols in the alphabet."""

    length: int
    symbols: int

    def check(self) -> None:
        """Raise InputError unless 1 <= S <= 511 and 2 <= V <= 40,000, whole numbers."""
        for name, value, low, high in (
            ("--length", self.length, 1, MAX_LENGTH),
            ("--symbols", self.symbols, 2, MAX_SYMBOLS),
        ):
            whole = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
            if not whole or not low <= value <= high:
                raise InputError(f"random {name} must be a whole number in [{low}, {high:,}]")

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def prompt(self, n: int) -> int:
        """Symbols that open a sequence as the prompt of greedy decoding: the fewest that
        tell N sequences apart on average, ceil(log_V N) (at least 1), and at most S - 1."""
        shortest = 1
        while self.symbols**shortest < n:
            shortest += 1
        return max(0, min(shortest, self.length - 1))

    @property
    def bits_per_sequence(self) -> float:
        """The information in one sequence: S log2 V."""
        return self.length * math.log2(self.symbols)


@dataclass(frozen=True)
class Sequences:
    """The population of a random dataset: N sequences drawn from its seed."""

    seed: int
    n: int

    def __len__(self) -> int:
        return self.n


def max_bits(n: int, params: RandomParams) -> dict[str, float]:
    """The bits of N sequences, all a model can memorize: N S log2 V."""
    total = n * params.bits_per_sequence
    return {"sequences": total, "total": total}


def tokenizer(params: RandomParams) -> Tokenizer:
    """End-of-text and the V symbols as single tokens (ids 0..V), padded with unused
    special tokens to a multiple of 64; decoding joins the tokens without spaces, so a
    decoded text tokenizes back to the same ids. Deterministic."""
    texts = symbol_texts(params.symbols)
    vocab = {bpe.EOT: 0, **{s: i + 1 for i, s in enumerate(texts)}}
    tok = Tokenizer(models.WordLevel(vocab))
    tok.add_special_tokens([bpe.EOT])
    tok.add_tokens(texts)  # matched before the (absent) pre-tokenizer: every symbol a token
    tok.decoder = decoders.Fuse()  # ids decode to the text, without spaces between symbols
    return bpe.with_special(tok, [])


def draw(params: RandomParams, seed: int, sequences) -> np.ndarray:
    """The symbols of the given sequences: [n, S] int64 in [0, V)."""
    sequences = np.asarray(sequences, dtype=np.int64)
    positions = np.arange(params.length)
    return keyed.uniform_int(params.symbols, seed, SEQUENCE_STREAM, sequences[:, None], positions)


class RandomTable:
    """Units of random sequences (end-of-text + S symbol tokens) with a label per token:
    the counterpart of `FragmentTable` for the stream and the evaluator. The symbols of
    all N sequences are drawn once, on first use, and kept (N x S x 2 bytes)."""

    def __init__(self, population: Sequences, tokenizer: Tokenizer, params: RandomParams):
        params.check()
        self.population, self.tokenizer, self.params = population, tokenizer, params
        self.eot = bpe.eot_id(tokenizer)
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        texts = symbol_texts(params.symbols)
        if any(s not in vocab for s in texts):
            raise InputError(f"the tokenizer lacks the {params.symbols} symbols <|t0|>..")
        self.symbol_ids = np.array([vocab[s] for s in texts], dtype=np.int32)
        self.prompt = params.prompt(len(population))
        self.unit_labels = np.full(params.length + 1, SYMBOL, dtype=np.uint8)
        self.unit_labels[0] = LABEL["other"]
        self.unit_labels[1 : 1 + self.prompt] = PROMPT

    @cached_property
    def symbols(self) -> np.ndarray:
        """Every sequence's symbols: [N, S] uint16."""
        n = len(self.population)
        out = np.empty((n, self.params.length), dtype=np.uint16)
        for lo in range(0, n, CHUNK):
            hi = min(n, lo + CHUNK)
            out[lo:hi] = draw(self.params, self.population.seed, np.arange(lo, hi))
        return out

    def assemble(self, people, exposure=0) -> Units:
        """The units of many sequences (the same at every exposure)."""
        people = np.asarray(people, dtype=np.int64)
        tokens = np.empty((len(people), self.params.length + 1), dtype=np.int32)
        tokens[:, 0] = self.eot
        tokens[:, 1:] = self.symbol_ids[self.symbols[people]]
        width = self.params.length + 1
        return Units(
            tokens=tokens.ravel(),
            labels=np.tile(self.unit_labels, len(people)),
            offsets=np.arange(len(people) + 1, dtype=np.int64) * width,
        )

    def lengths(self, people, exposure=0) -> np.ndarray:
        return np.full(len(np.asarray(people)), self.params.length + 1, dtype=np.int64)

    def expected_lengths(self, people) -> np.ndarray:
        return self.lengths(people).astype(np.float64)

    def used_ids(self, online: bool = False) -> np.ndarray:
        """The token ids the corpus uses: end-of-text and every symbol that occurs."""
        seen = np.zeros(self.params.symbols, dtype=bool)
        for lo in range(0, len(self.population), CHUNK):
            seen[self.symbols[lo : lo + CHUNK].ravel()] = True
        return np.union1d([self.eot], self.symbol_ids[seen])

    def texts(self, people) -> list[str]:
        """The text of each sequence: its symbols, no spaces."""
        texts = np.array(symbol_texts(self.params.symbols), dtype=object)
        return ["".join(row) for row in texts[self.symbols[np.asarray(people, dtype=np.int64)]]]

    def mismatches(self, people, exposure=0) -> list[int]:
        """Sequences whose assembled tokens differ from the tokenizer run on their text."""
        people = np.asarray(people, dtype=np.int64)
        units = self.assemble(people)
        encoded = bpe.encode(self.tokenizer, self.texts(people))
        return [int(p) for i, p in enumerate(people) if units.unit(i)[0][1:].tolist() != encoded[i]]


def write_sequences(table: RandomTable, path, progress: bool = False) -> None:
    """sequences.parquet: one row per sequence, its index, its symbols (list of V-ary
    numbers, symbol j written <|tj|>) and its text."""
    n = len(table.population)
    schema = pa.schema(
        [
            ("sequence", pa.int64()),
            ("symbols", pa.list_(pa.uint16(), table.params.length)),
            ("text", pa.string()),
        ]
    )
    with pq.ParquetWriter(path, schema, compression="zstd") as w:
        starts = range(0, n, CHUNK)
        with Progress(len(starts), "sequences.parquet", "chunk", enabled=progress) as bar:
            for lo in starts:
                rows = np.arange(lo, min(n, lo + CHUNK))
                flat = pa.array(table.symbols[rows].ravel(), pa.uint16())
                columns = [
                    pa.array(rows),
                    pa.FixedSizeListArray.from_arrays(flat, table.params.length),
                    pa.array(table.texts(rows), pa.string()),
                ]
                w.write_table(pa.Table.from_arrays(columns, schema=schema))
                bar.update(1)


def dataset_card(manifest: dict) -> str:
    """A README with YAML `configs`, so that `datasets.load_dataset(DIR)` reads the
    sequences."""
    p = manifest["random"]
    return (
        "---\nconfigs:\n- config_name: sequences\n  default: true\n  data_files:\n"
        "  - split: train\n    path: sequences.parquet\n---\n\n"
        f"# random(N={manifest['n']}, S={p['length']}, V={p['symbols']}), "
        f"seed {manifest['seed']}\n\n"
        f"{manifest['n']} sequences of {p['length']} symbols drawn uniformly from {p['symbols']} "
        f"(symbol j written <|tj|>), generated by bioknow {manifest['versions']['bioknow']}, "
        "to measure memorization capacity as Morris et al. 2025 (arXiv 2505.24832) do.\n"
        f"Information: {manifest['knowledge_bits']['total']:.6g} bits "
        f"({manifest['bits_per_sequence']:.6g} per sequence).\n"
    )


BYTES_PER_SYMBOL = 12  # in memory while generating: drawn symbols, hashes, texts


def check_resources(n: int, params: RandomParams, out) -> None:
    """Refuse a dataset whose symbols (in memory, and on disk) exceed the machine's."""
    what = f"random(N={n:,}, S={params.length})"
    symbols = n * params.length
    validate.fits_memory(symbols * 2 + CHUNK * params.length * BYTES_PER_SYMBOL, what)
    validate.fits_disk(symbols * 4, out, what)
