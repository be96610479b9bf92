"""bioD(N, K, C, D, L, T): synthetic knowledge with tunable diversity (docs/design.md §2.4).

N people (names and genders as in bioS) each have K attributes "ID 1".."ID K". Attribute a
has a diversity set D_a of D distinct strings, each of L symbols over an alphabet of T;
a person's value for a is C chunks, each drawn uniformly and independently from D_a.
One paragraph per person, attributes in a random order drawn afresh at each exposure:

    Anya Briar Forger's ID 7 is v1, ..., vC. Her ID 2 is v1, ..., vC. ...

Symbol j is the text `<|tj|>`. A chunk is written with the space before it, and the
tokenizer holds " <|tj|>" (the symbol opening a chunk, with that space, as a GPT-2 token
carries its leading space) and, when L > 1, "<|tj|>" (a later symbol) as added tokens: a
chunk is exactly L tokens and costs one more, its "," or ".". Added tokens are matched
before pre-tokenization, so every symbol edge is a token boundary; the other fragments
("'s", " ID 7 is", ",", ".", " Her") meet at pre-tokenizer boundaries (a name is letters
and "'s" is a GPT-2 contraction), so each fragment is tokenized once and a paragraph is
assembled by array gathers, as for bioS (`bioknow.data.render.tokens`). The default BPE of a
bioD dataset is trained on the names and these fragments alone.

Everything is a pure function of the population seed: the diversity sets, each person's
values and each exposure's attribute order are counter-based draws (`bioknow.data.keyed`).
The knowledge bits of a perfect model are those of Def. 4.1 (`capacity.biod_max_bits`).
"""

from dataclasses import asdict, dataclass

import numpy as np
from tokenizers import Tokenizer

from bioknow.base import capacity
from bioknow.base.errors import InputError
from bioknow.data import keyed
from bioknow.data import tokenizer as bpe
from bioknow.data.fields import POSSESSIVE, Fields
from bioknow.data.population import Population
from bioknow.data.render.bios import Rendering, Span
from bioknow.data.render.tokens import LABEL, Units

# Label ids of value tokens: the tokens of a value's first chunk (p3) and of its other
# chunks (with the first: p2). The separators "," between chunks are "other".
CHUNK_FIRST = np.uint8(LABEL["chunk_first"])
CHUNK = np.uint8(LABEL["chunk"])

# Stream ids of the keyed draws; stable forever, since datasets depend on them.
SET_STREAM = 40
VALUE_STREAM = 41
ORDER_STREAM = 42
# Diversity sets are a keyed bijection of [0, T^L) while T^L stays below this.
PERMUTE_LIMIT = 1 << 62
CHUNK_PEOPLE = 1 << 14  # people handled at a time where all of them are visited
FRAGMENT_WEIGHT = 1000  # copies of each fixed fragment in the tokenizer's training text


def _capped_power(base: int, exponent: int, cap: int) -> int:
    """base^exponent, or cap + 1 when it exceeds cap, without building a huge number."""
    if base == 1:
        return 1
    power = 1
    for _ in range(exponent):
        power *= base
        if power > cap:
            return cap + 1
    return power


@dataclass(frozen=True)
class BioDParams:
    """K attributes, C chunks per value, D strings per diversity set, L symbols per
    string, T symbols in the alphabet (docs/design.md §2.4)."""

    k: int
    c: int
    d: int
    l: int  # noqa: E741
    t: int

    def check(self) -> None:
        """Raise InputError unless every parameter is a whole number >= 1 and D <= T^L."""
        for name, value in self.as_dict().items():
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise InputError(f"bioD {name.upper()} must be a whole number, got {value!r}")
            if value < 1:
                raise InputError(f"bioD {name.upper()} must be at least 1, got {value}")
        if _capped_power(int(self.t), int(self.l), int(self.d)) < self.d:
            raise InputError(
                f"bioD D = {self.d} exceeds T^L = {self.t}^{self.l}: "
                "a diversity set cannot hold that many distinct strings"
            )

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def symbols(t: int) -> list[str]:
    """The texts of the alphabet's T symbols."""
    return [f"<|t{j}|>" for j in range(t)]


def symbol_tokens(params: BioDParams) -> list[str]:
    """The added tokens of the alphabet: each symbol opening a chunk, with the space
    before it, and (L > 1) each symbol inside a chunk."""
    plain = symbols(params.t)
    return [" " + s for s in plain] + (plain if params.l > 1 else [])


def training_text(fields: Fields, k: int):
    """The default tokenizer's training text: every name part as it appears in a
    paragraph, and each fixed fragment, many times."""
    lists = fields.lists
    yield from lists["first_names"]
    yield from (" " + s for key in ("middle_names", "last_names") for s in lists[key])
    fragments = ["'s", ".", ",", *(" " + p.capitalize() for p in POSSESSIVE)]
    fragments += [f" ID {a + 1} is" for a in range(min(k, 1000))]
    for _ in range(FRAGMENT_WEIGHT):
        yield from fragments


def tokenizer(fields: Fields, params: BioDParams, vocab_size: int = bpe.DEFAULT_VOCAB) -> Tokenizer:
    """A byte-level BPE of up to `vocab_size` tokens trained on the names and fragments,
    plus the alphabet as added (non-special) tokens, its vocabulary padded with unused
    special tokens to a multiple of 64. Deterministic."""
    tok = bpe.train(fields, vocab_size, training_text(fields, params.k))
    unused = sum(token.startswith("<|unused") for token in tok.get_vocab(with_added_tokens=True))
    tok.add_tokens(symbol_tokens(params))
    short = -tok.get_vocab_size() % bpe.VOCAB_MULTIPLE
    tok.add_special_tokens([f"<|unused{unused + i}|>" for i in range(short)])
    return tok


def _permuted_strings(t: int, width: int, d: int, seed: int, attribute: int) -> np.ndarray:
    """D distinct strings [D, L = width] of attribute's set: the first D values of a keyed
    bijection of [0, T^L), written in base T (most significant symbol first)."""
    codes = keyed.permute(np.arange(d), t**width, seed, SET_STREAM, attribute)
    out = np.empty((d, width), dtype=np.int32)
    for j in reversed(range(width)):
        codes, out[:, j] = np.divmod(codes, t)
    return out


def _hashed_strings(t: int, width: int, d: int, seed: int, attribute: int) -> np.ndarray:
    """D distinct strings [D, L = width] of attribute's set: independent uniform symbols
    keyed by (attribute, attempt, string, position); the later copies of a repeated string
    are drawn again, with the next attempt, until all D are distinct."""
    positions = np.arange(width)
    out = keyed.uniform_int(t, seed, SET_STREAM, attribute, 0, np.arange(d)[:, None], positions)
    attempt = 0
    while True:
        _, first = np.unique(out, axis=0, return_index=True)
        repeated = np.setdiff1d(np.arange(d), first)
        if not repeated.size:
            return out.astype(np.int32)
        attempt += 1
        out[repeated] = keyed.uniform_int(
            t, seed, SET_STREAM, attribute, attempt, repeated[:, None], positions
        )


def diversity_sets(params: BioDParams, seed: int) -> np.ndarray:
    """The K diversity sets: [K, D, L] int32 symbol indices, D distinct strings each, a
    uniform random D-subset of the T^L strings (docs/design.md §2.4)."""
    params.check()
    t, width, d = int(params.t), int(params.l), int(params.d)
    small = _capped_power(t, width, PERMUTE_LIMIT) <= PERMUTE_LIMIT
    draw = _permuted_strings if small else _hashed_strings
    return np.stack([draw(t, width, d, seed, a) for a in range(params.k)])


def knowledge_bits(n: int, n0: int, params: BioDParams) -> dict[str, float]:
    """The bits a perfect model of bioD stores (the numerator of Rmax, Def. 4.1)."""
    p = params
    return capacity.biod_max_bits(n, n0, p.k, p.c, p.d, p.l, p.t)


class BioDTable:
    """Pieces (token runs) of bioD paragraphs, assembled into units (end-of-text + the
    paragraph) with a label per token: the bioD counterpart of `FragmentTable`.

    A unit is a row of piece ids: end-of-text, the three name parts, then per attribute
    position k a block [lead, subject, " ID a is", chunk, ",", chunk, ..., chunk]
    (k = 0: lead empty, subject "'s"; k > 0: lead ".", subject " Her"/" His"), then ".".
    A chunk piece is one string of a diversity set: its L symbol tokens, the first
    holding the space before it.
    """

    def __init__(self, population: Population, tokenizer: Tokenizer, params: BioDParams):
        params.check()
        self.population, self.tokenizer, self.params = population, tokenizer, params
        self.eot = bpe.eot_id(tokenizer)
        self.sets = diversity_sets(params, population.seed)
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        needed = symbol_tokens(params)
        if any(s not in vocab for s in needed):
            raise InputError(
                f"the tokenizer lacks the {params.t} bioD symbols (as made by "
                "bioknow.data.render.biod.tokenizer); a bioD dataset from before bioknow 0.2 must "
                "be generated again"
            )
        self.symbol_text = symbols(params.t)
        lead = np.array([vocab[s] for s in needed[: params.t]], dtype=np.int32)
        inner = np.array([vocab[s] for s in needed[params.t :]] or lead, dtype=np.int32)
        self.symbol_ids = np.union1d(lead, inner)
        # the token ids of every string of every set: [K, D, L], the first with its space
        self.chunk_ids = np.where(np.arange(params.l) == 0, lead[self.sets], inner[self.sets])

        lists = population.fields.lists
        texts = ["", "", "'s", ".", ","]  # empty, end-of-text (set below), fixed fragments
        self.empty, self.apostrophe_s, self.dot, self.separator = 0, 2, 3, 4

        def add(items: list[str]) -> int:
            """Append pieces; return the id of the first."""
            texts.extend(items)
            return len(texts) - len(items)

        self.pronoun = add([" " + p.capitalize() for p in POSSESSIVE])
        self.attribute = add([f" ID {a + 1} is" for a in range(params.k)])
        self.first = add(lists["first_names"])
        self.middle = add([" " + s for s in lists["middle_names"]])
        self.last = add([" " + s for s in lists["last_names"]])
        self.chunk = len(texts)  # chunk piece of (attribute a, string v): chunk + a * D + v

        ids = bpe.encode(tokenizer, texts)
        ids[1] = [self.eot]
        chunk_tokens = self.chunk_ids.ravel()
        self.pool = np.concatenate(
            [np.array([i for x in ids for i in x], dtype=np.int32), chunk_tokens]
        )
        chunk_lengths = np.full(params.k * params.d, params.l)
        self.length = np.concatenate([[len(x) for x in ids], chunk_lengths]).astype(np.int64)
        self.start = np.concatenate([[0], np.cumsum(self.length)[:-1]])

        # the label of each column of a unit's row of pieces
        block = np.full(2 * params.c + 2, LABEL["other"], dtype=np.uint8)
        block[3] = CHUNK_FIRST
        block[5::2] = CHUNK
        later = block.copy()
        later[1] = LABEL["gender"]
        self.column_labels = np.concatenate(
            [
                [LABEL["other"], LABEL["name"], LABEL["name"], LABEL["name"]],
                block,
                np.tile(later, params.k - 1),
                [LABEL["other"]],
            ]
        ).astype(np.uint8)

    def values(self, people) -> np.ndarray:
        """Each person's chunks: [n, K, C] indices into the attribute's diversity set, keyed
        by (population seed, person, attribute, chunk)."""
        people = np.asarray(people, dtype=np.int64)
        k, c = self.params.k, self.params.c
        return keyed.uniform_int(
            self.params.d,
            self.population.seed,
            VALUE_STREAM,
            people[:, None, None],
            np.arange(k)[None, :, None],
            np.arange(c)[None, None, :],
        )

    def orders(self, people, exposure) -> np.ndarray:
        """The attribute order of each person's paragraph at the given exposure (or one
        exposure each): [n, K] attribute indices by position, a keyed random permutation."""
        people = np.asarray(people, dtype=np.int64)
        exposure = np.asarray(exposure)
        if exposure.ndim:
            exposure = exposure[:, None]
        keys = keyed.hash64(
            self.population.seed, ORDER_STREAM, people[:, None], exposure, np.arange(self.params.k)
        )
        return np.argsort(keys, axis=1, kind="stable")

    def name_pieces(self, people: np.ndarray) -> np.ndarray:
        """The first, middle and last name piece of each person: [n, 3]."""
        lists = self.population.fields.lists
        n_middle, n_last = len(lists["middle_names"]), len(lists["last_names"])
        name = self.population.codes["name"][people].astype(np.int64)
        return np.stack(
            [
                self.first + name // (n_middle * n_last),
                self.middle + name // n_last % n_middle,
                self.last + name % n_last,
            ],
            axis=1,
        )

    def pieces(self, people: np.ndarray, exposure) -> np.ndarray:
        """Each person's unit as a row of piece ids (some empty): [n, width]."""
        k, c, d = self.params.k, self.params.c, self.params.d
        order = self.orders(people, exposure)
        gender = self.population.codes["gender"][people].astype(np.int64)
        blocks = np.empty((len(people), k, 2 * c + 2), dtype=np.int64)
        blocks[:, :, 0] = self.dot
        blocks[:, 0, 0] = self.empty
        blocks[:, :, 1] = (self.pronoun + gender)[:, None]
        blocks[:, 0, 1] = self.apostrophe_s
        blocks[:, :, 2] = self.attribute + order
        chosen = np.take_along_axis(self.values(people), order[:, :, None], axis=1)
        blocks[:, :, 3::2] = self.chunk + order[:, :, None] * d + chosen
        blocks[:, :, 4::2] = self.separator
        return np.concatenate(
            [
                np.ones((len(people), 1), dtype=np.int64),  # piece 1: end-of-text
                self.name_pieces(people),
                blocks.reshape(len(people), -1),
                np.full((len(people), 1), self.dot),
            ],
            axis=1,
        )

    def assemble(self, people, exposure) -> Units:
        """The units (end-of-text + paragraph) of many people, as tokens and labels."""
        people = np.asarray(people, dtype=np.int64)
        pieces = self.pieces(people, exposure)
        lengths = self.length[pieces]
        flat = lengths.ravel()
        # output token j of a piece p that begins at output position s is pool[start[p] + j - s]
        shift = self.start[pieces.ravel()] - (np.cumsum(flat) - flat)
        source = np.repeat(shift, flat) + np.arange(int(flat.sum()))
        labels = np.repeat(np.tile(self.column_labels, len(people)), flat)
        return Units(
            tokens=self.pool[source],
            labels=labels,
            offsets=np.concatenate([[0], np.cumsum(lengths.sum(1))]),
        )

    def lengths(self, people, exposure=0) -> np.ndarray:
        """Tokens in each person's unit, without assembling it. The same at every exposure:
        the attribute order moves pieces around but never changes them."""
        people = np.asarray(people, dtype=np.int64)
        p = self.params
        length = self.length
        gender = self.population.codes["gender"][people].astype(np.int64)
        fixed = (
            1  # end-of-text
            + length[self.apostrophe_s]
            + length[self.attribute : self.attribute + p.k].sum()
            + p.k * p.c * p.l
            + p.k * (p.c - 1) * length[self.separator]
            + p.k * length[self.dot]  # the k - 1 leads and the final "."
        )
        return (
            fixed
            + length[self.name_pieces(people)].sum(1)
            + (p.k - 1) * length[self.pronoun + gender]
        )

    def expected_lengths(self, people) -> np.ndarray:
        """Each person's unit length averaged over every rendering choice (exact): every
        exposure has the same length."""
        return self.lengths(people).astype(np.float64)

    def used_ids(self, online: bool) -> np.ndarray:
        """The token ids the corpus uses. The rendering choice (the attribute order) never
        changes which pieces a unit holds, so online and stored corpora use the same ids."""
        p = self.params
        used = np.zeros(len(self.length), dtype=bool)  # by piece
        used[[1, self.apostrophe_s, self.dot, self.separator]] = True
        used[self.attribute : self.attribute + p.k] = True
        n = len(self.population)
        for lo in range(0, n, CHUNK_PEOPLE):
            people = np.arange(lo, min(n, lo + CHUNK_PEOPLE))
            used[self.name_pieces(people)] = True
            used[self.chunk + np.arange(p.k)[:, None] * p.d + self.values(people)] = True
            if p.k > 1:
                used[self.pronoun + self.population.codes["gender"][people]] = True
        return np.unique(self.pool[np.repeat(used, self.length)])

    def chunk_text(self, attribute: int, string: int) -> str:
        """The text of a diversity-set string: its L symbols, no spaces."""
        return "".join(self.symbol_text[s] for s in self.sets[attribute, string])

    def render(self, people, exposure=0) -> list[Rendering]:
        """The paragraphs of many people at one exposure (or one each), with spans: "name"
        (the opening full name), "gender" (each pronoun) and "ID a" (a value, v1, ..., vC)."""
        people = np.asarray(people, dtype=np.int64)
        orders = self.orders(people, exposure)
        values = self.values(people)
        out = []
        for i, person in enumerate(people.tolist()):
            pronoun = POSSESSIVE[int(self.population.codes["gender"][person])].capitalize()
            name = self.population.full_name(person)
            text, spans = name, [Span("name", 0, len(name))]
            for k, a in enumerate(orders[i].tolist()):
                if k == 0:
                    text += "'s"
                else:
                    text += ". "
                    spans.append(Span("gender", len(text), len(text) + len(pronoun)))
                    text += pronoun
                text += f" ID {a + 1} is "
                value = ", ".join(self.chunk_text(a, v) for v in values[i, a].tolist())
                spans.append(Span(f"ID {a + 1}", len(text), len(text) + len(value)))
                text += value
            out.append(Rendering(person=person, text=text + ".", spans=tuple(spans)))
        return out

    def mismatches(self, people, exposure) -> list[int]:
        """People whose assembled tokens differ from the tokenizer run on their text (the
        invariant of docs/design.md §3); empty for the tokenizer of `tokenizer`."""
        people = np.asarray(people, dtype=np.int64)
        units = self.assemble(people, exposure)
        encoded = bpe.encode(self.tokenizer, [r.text for r in self.render(people, exposure)])
        return [int(p) for i, p in enumerate(people) if units.unit(i)[0][1:].tolist() != encoded[i]]
