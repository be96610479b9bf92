"""Biographies straight to token ids, with a label per token (DESIGN section 2).

Every template fragment and field value is tokenized once into a *piece*. A slot's piece
carries the space before it (" October 2, 1996", " She"), so every piece boundary is a
pre-tokenizer boundary and the concatenation of pieces equals `tokenizer(text)`. Each
sentence template becomes a *program*: a fixed-width row of piece ids, with negative
entries standing for the person's slots (name parts, pronouns, the value). Assembling
thousands of biographies is then array gathers, never a Python loop per token.

A *unit* is one exposure: the end-of-text token followed by the biography (with a run's
useful-data prefix token between them, when it has one).
"""

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from tokenizers import Tokenizer

from bioknow.fields import OBJECT, POSSESSIVE, SENTENCES, SUBJECT
from bioknow.population import Population
from bioknow.render.bios import choices, render_people
from bioknow.tokenizer import encode, eot_id

# label id = index; bioD values: "chunk_first" (a value's first chunk), "chunk" (the others)
LABELS = ("other", "name", "gender", *SENTENCES, "chunk_first", "chunk")
LABEL = {name: i for i, name in enumerate(LABELS)}

# Slot columns of a person's slot table; a program refers to column c as -(c + 1).
EMPTY, SUBJECT_SLOT, POSSESSIVE_SLOT, OBJECT_SLOT, FIRST, MIDDLE, LAST = range(7)
VALUE = 7  # VALUE + j: the value of sentence j
N_SLOTS = VALUE + len(SENTENCES)


@dataclass
class Units:
    """Many units back to back: tokens and labels of unit i are [offsets[i], offsets[i+1])."""

    tokens: np.ndarray  # int32
    labels: np.ndarray  # uint8, ids of LABELS
    offsets: np.ndarray  # int64, len = units + 1

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def unit(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.tokens[a:b], self.labels[a:b]


class FragmentTable:
    """Pieces (token runs with a label) and the programs of every sentence template."""

    def __init__(self, population: Population, tokenizer: Tokenizer, prefix: str | None = None):
        fields = population.fields
        self.population, self.tokenizer = population, tokenizer
        texts: list[str] = ["", ""]  # piece 0: empty; piece 1: end-of-text (set below)
        labels: list[int] = [LABEL["other"], LABEL["other"]]

        def add(items, label: str) -> int:
            """Append pieces; return the id of the first."""
            first = len(texts)
            texts.extend(items)
            labels.extend([LABEL[label]] * len(items))
            return first

        self.subject = add([" " + s for s in SUBJECT], "gender")
        self.possessive = add([" " + s for s in POSSESSIVE], "gender")
        self.object = add([" " + s for s in OBJECT], "gender")
        self.first = add(fields.lists["first_names"], "name")
        self.middle = add([" " + s for s in fields.lists["middle_names"]], "name")
        self.last = add([" " + s for s in fields.lists["last_names"]], "name")
        self.value = [add([" " + v for v in fields.values(s)], s) for s in SENTENCES]
        opening = [1] if prefix is None else [1, add([prefix], "other")]  # piece 1: end-of-text

        literal: dict[str, int] = {}
        width = len(opening) + max(3 + len(t.parts) for ts in fields.templates.values() for t in ts)
        most = max(len(ts) for ts in fields.templates.values())
        # programs[sentence, template, later]: later = 0 when the sentence opens the unit
        # (end-of-text and the full name), 1 otherwise (a pronoun subject)
        self.programs = np.full((len(SENTENCES), most, 2, width), -(EMPTY + 1), dtype=np.int32)
        for j, sentence in enumerate(SENTENCES):
            for t, template in enumerate(fields.templates[sentence]):
                refs = []
                for k, (kind, text) in enumerate(template.parts):
                    if kind == "text":
                        if k + 1 < len(template.parts):
                            text = text[:-1]  # the space before the next slot goes with it
                        if text not in literal:
                            literal[text] = add([text], "other")
                        refs.append(literal[text])
                    elif text == "subject":
                        refs.append(None)  # the name or the pronoun, filled in below
                    else:
                        column = {
                            "value": VALUE + j,
                            "possessive": POSSESSIVE_SLOT,
                            "object": OBJECT_SLOT,
                        }[text]
                        refs.append(-(column + 1))
                for later, subject in ((0, [FIRST, MIDDLE, LAST]), (1, [SUBJECT_SLOT])):
                    row = opening.copy() if later == 0 else []
                    for ref in refs:
                        row += [-(c + 1) for c in subject] if ref is None else [ref]
                    self.programs[j, t, later, : len(row)] = row

        self.eot = eot_id(tokenizer)
        ids = encode(tokenizer, texts)
        ids[1] = [self.eot]
        self.length = np.array([len(x) for x in ids], dtype=np.int64)
        self.start = np.concatenate([[0], np.cumsum(self.length)[:-1]])
        self.pool = np.array([i for x in ids for i in x], dtype=np.int32)
        self.label = np.array(labels, dtype=np.uint8)
        self.pool_label = np.repeat(self.label, self.length)  # the label of each pool token
        self.opening_length = int(self.length[opening].sum())  # end-of-text (and prefix)

    def slots(self, people: np.ndarray) -> np.ndarray:
        """The piece of every slot for each person: [len(people), N_SLOTS]."""
        codes, fields = self.population.codes, self.population.fields
        n_middle, n_last = len(fields.lists["middle_names"]), len(fields.lists["last_names"])
        name = codes["name"][people].astype(np.int64)
        gender = codes["gender"][people].astype(np.int64)
        table = np.empty((len(people), N_SLOTS), dtype=np.int64)
        table[:, EMPTY] = 0
        table[:, SUBJECT_SLOT] = self.subject + gender
        table[:, POSSESSIVE_SLOT] = self.possessive + gender
        table[:, OBJECT_SLOT] = self.object + gender
        table[:, FIRST] = self.first + name // (n_middle * n_last)
        table[:, MIDDLE] = self.middle + name // n_last % n_middle
        table[:, LAST] = self.last + name % n_last
        for j, sentence in enumerate(SENTENCES):
            code = codes["employer" if sentence == "work_city" else sentence][people]
            table[:, VALUE + j] = self.value[j] + code.astype(np.int64)
        return table

    def pieces(self, people: np.ndarray, exposure) -> tuple[np.ndarray, np.ndarray]:
        """The non-empty pieces of each person's unit at the given exposure, back to back,
        and the number of pieces of each unit."""
        orders, template_ids = choices(self.population, people, exposure)
        orders = orders.astype(np.int64)
        templates = np.take_along_axis(template_ids, orders, axis=1)
        _, most, _, width = self.programs.shape
        rows = (orders * most + templates) * 2 + (np.arange(len(SENTENCES)) > 0)
        refs = self.programs.reshape(-1, width)[rows].reshape(len(people), -1)
        where = np.flatnonzero(refs != -(EMPTY + 1))
        refs = refs.ravel()[where]
        person = where // (len(SENTENCES) * width)
        slot = np.flatnonzero(refs < 0)
        refs[slot] = self.slots(people).ravel()[person[slot] * N_SLOTS - refs[slot] - 1]
        return refs, np.bincount(person, minlength=len(people))

    def assemble(self, people, exposure) -> Units:
        """The units (end-of-text + biography) of many people, as tokens and labels."""
        people = np.asarray(people, dtype=np.int64)
        pieces, counts = self.pieces(people, exposure)
        lengths = self.length[pieces]
        ends = np.cumsum(lengths)
        # source index of every output token: +1 within a piece, a jump at each piece start
        starts = self.start[pieces]
        step = np.ones(int(ends[-1]), dtype=np.int64)
        step[ends[:-1]] = starts[1:] - (starts[:-1] + lengths[:-1] - 1)
        step[0] = starts[0]
        source = np.cumsum(step)
        unit_ends = ends[np.cumsum(counts) - 1]
        return Units(
            tokens=self.pool[source],
            labels=self.pool_label[source],
            offsets=np.concatenate([[0], unit_ends]),
        )

    def lengths(self, people, exposure) -> np.ndarray:
        """Tokens in each person's unit at the given exposure, without assembling it."""
        people = np.asarray(people, dtype=np.int64)
        _, template_ids = choices(self.population, people, exposure)
        gender = self.population.codes["gender"][people].astype(np.int64)
        sentence = np.arange(len(SENTENCES))
        return self.base_length[people] + self.template_length[
            gender[:, None], sentence, template_ids
        ].sum(1)

    def expected_lengths(self, people) -> np.ndarray:
        """Each person's unit length averaged over every rendering choice (exact)."""
        people = np.asarray(people, dtype=np.int64)
        counts = [len(ts) for ts in self.population.fields.templates.values()]
        means = [
            sum(self.template_length[g, j, :c].mean() for j, c in enumerate(counts)) for g in (0, 1)
        ]
        gender = self.population.codes["gender"][people].astype(np.int64)
        return self.base_length[people] + np.array(means)[gender]

    @cached_property
    def base_length(self) -> np.ndarray:
        """Per person, the part of a unit's length that no rendering choice changes:
        the opening (end-of-text, and the prefix if any), the name and the six values, less
        the pronoun the name replaces."""
        out = np.empty(len(self.population), dtype=np.int32)
        for start in range(0, len(out), 1 << 20):
            people = np.arange(start, min(len(out), start + (1 << 20)))
            slot_length = self.length[self.slots(people)]
            fixed = slot_length[:, [FIRST, MIDDLE, LAST, *range(VALUE, N_SLOTS)]].sum(1)
            out[people] = self.opening_length + fixed - slot_length[:, SUBJECT_SLOT]
        return out

    @cached_property
    def template_length(self) -> np.ndarray:
        """[gender, sentence, template]: tokens of a template as a later sentence (pronoun
        subject), its value excluded."""
        refs = self.programs[:, :, 1, :]
        out = []
        for g in (0, 1):
            slot_length = np.zeros(N_SLOTS, dtype=np.int64)
            slot_length[SUBJECT_SLOT] = self.length[self.subject + g]
            slot_length[POSSESSIVE_SLOT] = self.length[self.possessive + g]
            slot_length[OBJECT_SLOT] = self.length[self.object + g]
            literal = self.length[np.maximum(refs, 0)]
            out.append(np.where(refs >= 0, literal, slot_length[np.maximum(-refs - 1, 0)]).sum(-1))
        return np.stack(out)

    def used_ids(self, online: bool) -> np.ndarray:
        """The token ids the corpus uses: those of any possible rendering (online), or of
        each person's one stored rendering (exposure 0)."""
        people = len(self.population)
        chunks = [np.arange(lo, min(people, lo + (1 << 18))) for lo in range(0, people, 1 << 18)]
        if not online:
            return np.unique(
                np.concatenate([np.unique(self.assemble(c, 0).tokens) for c in chunks])
            )
        refs = self.programs
        columns = sorted(set((-refs[refs < 0] - 1).tolist()) - {EMPTY})
        pieces = [np.unique(refs[refs >= 0])] + [
            np.unique(self.slots(c)[:, columns]) for c in chunks
        ]
        piece_of_token = np.repeat(np.arange(len(self.length)), self.length)
        return np.unique(self.pool[np.isin(piece_of_token, np.concatenate(pieces))])

    def mismatches(self, people, exposure) -> list[int]:
        """People whose assembled tokens differ from the tokenizer run on their text: the
        invariant every tokenizer must keep (DESIGN section 2)."""
        people = np.asarray(people, dtype=np.int64)
        units = self.assemble(people, exposure)
        texts = [r.text for r in render_people(self.population, people, exposure)]
        encoded = encode(self.tokenizer, texts)
        return [int(p) for i, p in enumerate(people) if units.unit(i)[0][1:].tolist() != encoded[i]]
