"""Question-answer data for the knowledge-extraction probe (Part 3.1 section 4; Part 3.3
App. A.2): a QA text per (person, attribute), from a few phrasings per question.

    What is the birth city of Anya Briar Forger? Answer: Princeton, NJ
    What is ID 3 of Anya Briar Forger? Answer: <|t7|><|t2|>, <|t1|><|t9|>

bioS-family data (bioS, bioS-simple, bioR-style) asks for the five attributes of Part
3.1 (the work city, which follows from the employer, is left out as in App. A.2); bioD
for each of its K attributes. The templates are `templates/questions/*.txt`, one
phrasing a line, with {subject} (the full name) once and {value} once, at the end (bioD:
also {attribute}, "ID a").

As biographies are (`bioknow.data.render.tokens`), QA units (end-of-text, then the text) are
assembled from pieces tokenized once: the templates' literals, the name parts and every
value, each token labelled as the value is labelled in the biographies (the attribute;
bioD: "chunk_first" for a value's first chunk, "chunk" for the others, "other" for the
"," between). So `bioknow.measure.evaluate.score` scores an answer exactly as eval scores a value.
A table's item i is person i // A asked about attribute i % A (A attributes).
"""

from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from bioknow.base.errors import InputError
from bioknow.data import keyed
from bioknow.data.fields import DEFAULT_DIR, read_lines, split_slots
from bioknow.data.population import Population
from bioknow.data.render.tokens import LABEL, Units
from bioknow.data.tokenizer import encode, eot_id

QUESTIONS_DIR = DEFAULT_DIR / "questions"
BIOS_ATTRIBUTES = ("birth_date", "birth_city", "university", "major", "employer")
VARIANTS = ("bioS", "bioS-simple", "bioR-style", "bioD")  # the variants with QA data
TEMPLATE_STREAM = 60  # keyed draws of a QA item's phrasing
# Slot markers of a template's program: the name parts (the first name with or without
# the space before it) and the value's parts.
FIRST_BARE, FIRST, MIDDLE, LAST, VALUE = range(-1, -6, -1)


@dataclass(frozen=True)
class Question:
    """One phrasing: its literals and slots, in order ("text", literal) or ("slot", name)."""

    text: str
    parts: tuple[tuple[str, str], ...]


def parse_question(where: str, text: str) -> Question:
    """A phrasing with {subject} once and {value} once, at the end, each slot after a
    space or opening the text, so that every slot boundary is a tokenizer boundary."""

    def fail(why: str) -> InputError:
        return InputError(f"{where}: {why}: {text!r}")

    parts = split_slots(text, ("subject", "value"), fail)
    slots = [p for kind, p in parts if kind == "slot"]
    if slots != ["subject", "value"] or parts[-1] != ("slot", "value"):
        raise fail("a question needs {subject} once, then {value} once, at the end")
    if "  " in text:
        raise fail("double space")
    return Question(text, parts)


def load_questions(name: str, attribute: str | None = None) -> tuple[Question, ...]:
    """The phrasings of `templates/questions/NAME.txt`; bioD's with {attribute} replaced."""
    path = QUESTIONS_DIR / f"{name}.txt"
    lines = read_lines(path, "question templates")
    out = []
    for number, line in enumerate(lines, 1):
        if attribute is not None:
            if line.count("{attribute}") != 1:
                raise InputError(f"{path} line {number}: needs {{attribute}} once: {line!r}")
            line = line.replace("{attribute}", attribute)
        out.append(parse_question(f"{path} line {number}", line))
    if not out:
        raise InputError(f"{path}: no question templates")
    return tuple(out)


def attributes(variant: str, biod: dict | None) -> tuple[str, ...]:
    """The attributes a variant's QA asks for; a variant without QA is refused."""
    if variant not in VARIANTS:
        raise InputError(f"{variant} data has no QA templates (probes cover {', '.join(VARIANTS)})")
    if variant == "bioD":
        return tuple(f"ID {a + 1}" for a in range(biod["k"]))
    return BIOS_ATTRIBUTES


class QATable:
    """Pieces (token runs, one label each) and the programs of every phrasing; items
    assembled into units with array gathers, as biographies are. `biod`: the dataset's
    `BioDTable` (its diversity sets and chunk tokens), for bioD data. `prefix`: a run's
    useful-data token, opening every unit after the end-of-text as it opened the
    biographies."""

    def __init__(
        self, population: Population, tokenizer: Tokenizer, variant: str, biod=None, prefix=None
    ):
        self.population, self.tokenizer, self.biod = population, tokenizer, biod
        self.attributes = attributes(variant, biod.params.as_dict() if biod else None)
        self.eot = eot_id(tokenizer)
        self.texts, self.labels = ["", ""], [LABEL["other"], LABEL["other"]]  # empty, eot
        self.opening = [1] if prefix is None else [1, self.add([prefix], "other")]
        lists = population.fields.lists
        self.first_bare = self.add(lists["first_names"], "name")
        self.first = self.add([" " + s for s in lists["first_names"]], "name")
        self.middle = self.add([" " + s for s in lists["middle_names"]], "name")
        self.last = self.add([" " + s for s in lists["last_names"]], "name")
        if biod is None:
            values = population.fields.values
            self.value = [self.add([" " + v for v in values(a)], a) for a in self.attributes]
            self.questions = [load_questions(a) for a in self.attributes]
        else:
            self.separator = self.add([","], "other")
            self.questions = [load_questions("bioD", a) for a in self.attributes]
        self.programs, self.counts = self.build_programs()
        ids = encode(tokenizer, self.texts)
        ids[1] = [self.eot]
        self.pool = np.array([t for x in ids for t in x], dtype=np.int32)
        self.length = np.array([len(x) for x in ids], dtype=np.int64)
        self.start = np.concatenate([[0], np.cumsum(self.length)[:-1]])
        self.label = np.array(self.labels, dtype=np.uint8)
        if biod is not None:
            self.add_chunks(biod)

    def add(self, items, label: str) -> int:
        """Append pieces (texts, tokenized later) with one label; the id of the first."""
        self.texts.extend(items)
        self.labels.extend([LABEL[label]] * len(items))
        return len(self.texts) - len(items)

    def add_chunks(self, biod) -> None:
        """bioD's chunk pieces: string v of attribute a is piece chunk + a D + v (label
        "chunk_first") and chunk_later + a D + v ("chunk"), over the same tokens."""
        chunk_ids = biod.chunk_ids.reshape(-1, biod.params.l)
        count = len(chunk_ids)
        self.chunk, self.chunk_later = len(self.length), len(self.length) + count
        starts = len(self.pool) + np.arange(count) * biod.params.l
        self.pool = np.concatenate([self.pool, chunk_ids.ravel().astype(np.int32)])
        self.length = np.concatenate([self.length, np.full(2 * count, biod.params.l)])
        self.start = np.concatenate([self.start, starts, starts])
        later = [LABEL["chunk_first"]] * count + [LABEL["chunk"]] * count
        self.label = np.concatenate([self.label, np.array(later, dtype=np.uint8)])

    def build_programs(self) -> tuple[np.ndarray, np.ndarray]:
        """programs[attribute, phrasing, :]: piece ids of the unit (negative: slot markers,
        0 padding); and the phrasings of each attribute."""
        literal: dict[str, int] = {}
        rows = {}
        for a, questions in enumerate(self.questions):
            for q, question in enumerate(questions):
                row = list(self.opening)
                for k, (kind, text) in enumerate(question.parts):
                    if kind == "text" and k + 1 < len(question.parts):
                        text = text[:-1]  # the space before a slot goes with the slot's piece
                    if kind == "text" and text:
                        if text not in literal:
                            literal[text] = self.add([text], "other")
                        row.append(literal[text])
                    elif kind == "slot" and text == "subject":
                        opens = len(row) == len(self.opening)
                        row += [FIRST_BARE if opens else FIRST, MIDDLE, LAST]
                    elif kind == "slot":
                        row.append(VALUE)
                rows[a, q] = row
        counts = np.array([len(qs) for qs in self.questions], dtype=np.int64)
        width = max(len(r) for r in rows.values())
        programs = np.zeros((len(self.questions), counts.max(), width), dtype=np.int64)
        for (a, q), row in rows.items():
            programs[a, q, : len(row)] = row
        return programs, counts

    def __len__(self) -> int:
        return len(self.population) * len(self.attributes)

    def split(self, items) -> tuple[np.ndarray, np.ndarray]:
        """The person and the attribute of each item."""
        items = np.asarray(items, dtype=np.int64)
        return items // len(self.attributes), items % len(self.attributes)

    def items(self, people) -> np.ndarray:
        """Every item of these people: each person's attributes in turn."""
        people = np.asarray(people, dtype=np.int64)
        return (people[:, None] * len(self.attributes) + np.arange(len(self.attributes))).ravel()

    def phrasing(self, items, exposure) -> np.ndarray:
        """The phrasing each item is asked in at an exposure (a keyed uniform draw)."""
        people, attribute = self.split(items)
        seed = self.population.seed
        draw = keyed.uniform_int(1 << 40, seed, TEMPLATE_STREAM, people, attribute, exposure)
        return draw % self.counts[attribute]

    def value_pieces(self, people, attribute) -> np.ndarray:
        """The pieces of each item's answer: [n, 1] (bioS family), or [n, 2C - 1] (bioD:
        its chunks and the "," between them)."""
        if self.biod is None:
            codes = self.population.codes
            column = [codes[a][people] for a in self.attributes]
            code = np.choose(attribute, column) if len(people) else np.zeros(0, np.int64)
            return (np.asarray(self.value)[attribute] + code.astype(np.int64))[:, None]
        c, d = self.biod.params.c, self.biod.params.d
        chosen = self.biod.values(people)[np.arange(len(people)), attribute]  # [n, C]
        out = np.full((len(people), 2 * c - 1), self.separator, dtype=np.int64)
        out[:, 0] = self.chunk + attribute * d + chosen[:, 0]
        out[:, 2::2] = self.chunk_later + (attribute * d)[:, None] + chosen[:, 1:]
        return out

    def pieces(self, items, exposure) -> np.ndarray:
        """Each item's unit as a row of piece ids (0: empty): [n, width]."""
        people, attribute = self.split(items)
        rows = self.programs[attribute, self.phrasing(items, exposure)]
        lists = self.population.fields.lists
        n_middle, n_last = len(lists["middle_names"]), len(lists["last_names"])
        name = self.population.codes["name"][people].astype(np.int64)
        first = name // (n_middle * n_last)
        slot = {
            FIRST_BARE: self.first_bare + first,
            FIRST: self.first + first,
            MIDDLE: self.middle + name // n_last % n_middle,
            LAST: self.last + name % n_last,
        }
        for marker, piece in slot.items():
            rows = np.where(rows == marker, piece[:, None], rows)
        value = self.value_pieces(people, attribute)
        rows = np.where(rows == VALUE, value[:, :1], rows)  # a bioD value's other pieces
        return np.concatenate([rows, value[:, 1:]], axis=1)  # follow its padding (empty)

    def answer_width(self) -> int:
        """The most tokens an answer has."""
        if self.biod is not None:
            p = self.biod.params
            return int(p.c * p.l + (p.c - 1) * self.length[self.separator])
        counts = [len(self.population.fields.values(a)) for a in self.attributes]
        pieces = zip(self.value, counts, strict=True)
        return int(max(self.length[v : v + n].max() for v, n in pieces))

    def longest(self) -> int:
        """An upper bound on any item's unit length: each phrasing with the longest piece
        of each of its slots."""
        lists = self.population.fields.lists
        spans = {
            FIRST_BARE: [(self.first_bare, len(lists["first_names"]))],
            FIRST: [(self.first, len(lists["first_names"]))],
            MIDDLE: [(self.middle, len(lists["middle_names"]))],
            LAST: [(self.last, len(lists["last_names"]))],
        }
        most = {k: max(self.length[a : a + n].max() for a, n in v) for k, v in spans.items()}
        most[VALUE] = self.answer_width()
        programs = self.programs
        lengths = np.where(programs >= 0, self.length[np.maximum(programs, 0)], 0)
        for marker, length in most.items():
            lengths = np.where(programs == marker, length, lengths)
        return int(lengths.sum(-1).max())

    def assemble(self, items, exposure) -> Units:
        """The units (end-of-text + QA text) of many items, as tokens and labels."""
        pieces = self.pieces(items, exposure)
        flat = self.length[pieces].ravel()
        shift = self.start[pieces.ravel()] - (np.cumsum(flat) - flat)
        source = np.repeat(shift, flat) + np.arange(int(flat.sum()))
        return Units(
            tokens=self.pool[source],
            labels=np.repeat(self.label[pieces.ravel()], flat),
            offsets=np.concatenate([[0], np.cumsum(self.length[pieces].sum(1))]),
        )

    def lengths(self, items, exposure) -> np.ndarray:
        """Tokens in each item's unit."""
        return self.length[self.pieces(items, exposure)].sum(1)

    def text(self, item: int, exposure) -> str:
        """The QA text of one item, written out (the tests compare it with the tokens)."""
        person, attribute = (int(x) for x in self.split(item))
        phrasing = self.questions[attribute][int(self.phrasing([item], exposure)[0])]
        if self.biod is None:
            value = self.population.value(self.attributes[attribute], person)
        else:
            chosen = self.biod.values([person])[0, attribute]
            value = ", ".join(self.biod.chunk_text(attribute, int(v)) for v in chosen)
        name = self.population.full_name(person)
        return phrasing.text.replace("{subject}", name).replace("{value}", value)

    def mismatches(self, items, exposure) -> list[int]:
        """Items whose assembled tokens differ from the tokenizer run on their text (the
        fragment invariant of docs/design.md §3)."""
        items = np.asarray(items, dtype=np.int64)
        units = self.assemble(items, exposure)
        encoded = encode(self.tokenizer, [self.text(i, exposure) for i in items])
        opening = int(self.length[self.opening].sum())
        return [
            int(item)
            for k, item in enumerate(items)
            if units.unit(k)[0][opening:].tolist() != encoded[k]
        ]
