"""Biographies straight to token ids, with a label per token (docs/design.md §3).

Every template fragment and field value is tokenized once into a *piece*. A slot's piece
carries the space before it (" October 2, 1996", " She"), so every piece boundary is a
pre-tokenizer boundary and the concatenation of pieces equals `tokenizer(text)`; where a
value ending in punctuation meets punctuation ("Inc." + "."), the tokenizer may join
them, and the pair is tokenized together as one fused piece (`bioknow.data.render.junctions`).
Each sentence template becomes a *program*: a fixed-width row of piece ids, with negative
entries standing for the person's slots (name parts, pronouns, the value). Assembling
thousands of biographies is then array gathers, never a Python loop per token.

A *unit* is one exposure: the end-of-text token followed by the biography (with a run's
useful-data prefix token between them, when it has one: `Prefixed`, for every table kind).
"""

import itertools
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from tokenizers import Tokenizer

from bioknow.data.fields import OBJECT, POSSESSIVE, SENTENCES, SUBJECT, SUBJECT_S
from bioknow.data.population import Population
from bioknow.data.render import dates, junctions
from bioknow.data.render.bios import choices, render_people
from bioknow.data.tokenizer import encode, eot_id, with_special

# label id = index; bioD values: "chunk_first" (a value's first chunk), "chunk" (the others);
# random sequences (`bioknow.data.render.sequences`): "prompt" (its first symbols), "symbol"
# (the rest)
LABELS = ("other", "name", "gender", *SENTENCES, "chunk_first", "chunk", "prompt", "symbol")
LABEL = {name: i for i, name in enumerate(LABELS)}

# Slot columns of a person's slot table; a program refers to column c as -(c + 1).
# SUBJECT_S_SLOT: "Her" or "His", for "{subject}'s" in a sentence that does not open.
EMPTY, SUBJECT_SLOT, SUBJECT_S_SLOT, POSSESSIVE_SLOT, OBJECT_SLOT, FIRST, MIDDLE, LAST = range(8)
VALUE = 8  # VALUE + j: the value of sentence j
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


def program_items(parts, j: int, later: int) -> list:
    """A template's program for sentence j, as literal texts and slot columns: the full
    name opens the unit (later = 0), a pronoun stands for it otherwise. Adjacent literals
    are merged, and the space before a slot goes with the slot's piece."""
    items: list = []
    for kind, text in parts:
        if kind == "text":
            items.append(text)
        elif text in ("subject", SUBJECT_S) and not later:
            items += [FIRST, MIDDLE, LAST, *(["'s"] if text == SUBJECT_S else [])]
        else:
            items.append(
                {
                    "subject": SUBJECT_SLOT,
                    SUBJECT_S: SUBJECT_S_SLOT,
                    "value": VALUE + j,
                    "possessive": POSSESSIVE_SLOT,
                    "object": OBJECT_SLOT,
                }[text]
            )
    merged: list = []
    for item in items:
        if isinstance(item, str) and merged and isinstance(merged[-1], str):
            merged[-1] += item
        else:
            merged.append(item)
    out = []
    for k, item in enumerate(merged):
        if isinstance(item, str) and k + 1 < len(merged):
            item = item[:-1]  # the space before the next slot goes with it
        if item != "":
            out.append(item)
    return out


class FragmentTable:
    """Pieces (token runs with a label per token) and the programs of every template."""

    def __init__(self, population: Population, tokenizer: Tokenizer):
        fields = population.fields
        self.population, self.tokenizer = population, tokenizer
        self.texts: list[str] = ["", ""]  # piece 0: empty; piece 1: end-of-text (set below)
        self.labels: list[int] = [LABEL["other"], LABEL["other"]]
        add = self.add
        self.columns = {  # slot column -> (first piece, number of pieces)
            SUBJECT_SLOT: (add([" " + s for s in SUBJECT], "gender"), 2),
            SUBJECT_S_SLOT: (add([" " + s.capitalize() for s in POSSESSIVE], "gender"), 2),
            POSSESSIVE_SLOT: (add([" " + s for s in POSSESSIVE], "gender"), 2),
            OBJECT_SLOT: (add([" " + s for s in OBJECT], "gender"), 2),
        }
        for column, key, space in (
            (FIRST, "first_names", ""),
            (MIDDLE, "middle_names", " "),
            (LAST, "last_names", " "),
        ):
            names = fields.lists[key]
            self.columns[column] = (add([space + s for s in names], "name"), len(names))
        for j, sentence in enumerate(SENTENCES):
            values = fields.values(sentence)
            self.columns[VALUE + j] = (add([" " + v for v in values], sentence), len(values))
        self.programs = self.build_programs()

        self.eot = eot_id(tokenizer)
        first, count = self.columns[VALUE + SENTENCES.index("birth_date")]
        rest = self.texts[:first] + self.texts[first + count :]
        ids = encode(tokenizer, rest)
        # the same ids as encoding each date, made from the dates' parts
        ids[first:first] = dates.date_ids(tokenizer, self.texts[first : first + count])
        ids[1] = [self.eot]
        token_labels = [[label] * len(x) for label, x in zip(self.labels, ids, strict=True)]
        self.fuse(ids, token_labels)
        self.length = np.array([len(x) for x in ids], dtype=np.int64)
        self.start = np.concatenate([[0], np.cumsum(self.length)[:-1]])
        self.pool = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32)
        self.pool_label = np.fromiter(itertools.chain.from_iterable(token_labels), np.uint8)

    def add(self, items, label: str) -> int:
        """Append pieces; return the id of the first."""
        first = len(self.texts)
        self.texts.extend(items)
        self.labels.extend([LABEL[label]] * len(items))
        return first

    def build_programs(self) -> np.ndarray:
        """programs[sentence, template, later, :]: a template's piece ids (negative: slot
        columns, -(EMPTY + 1) padding); later = 0 when the sentence opens the unit (piece 1,
        end-of-text, then the full name), 1 otherwise."""
        templates = self.population.fields.templates
        literal: dict[str, int] = {}
        rows = {}
        for j, sentence in enumerate(SENTENCES):
            for t, template in enumerate(templates[sentence]):
                for later in (0, 1):
                    row = [] if later else [1]
                    for item in program_items(template.parts, j, later):
                        if isinstance(item, str) and item not in literal:
                            literal[item] = self.add([item], "other")
                        row.append(literal[item] if isinstance(item, str) else -(item + 1))
                    rows[j, t, later] = row
        most = max(len(ts) for ts in templates.values())
        width = max(len(r) for r in rows.values())
        programs = np.full((len(SENTENCES), most, 2, width), -(EMPTY + 1), dtype=np.int32)
        for (j, t, later), row in rows.items():
            programs[j, t, later, : len(row)] = row
        return programs

    def junction_pairs(self) -> list[tuple[int, int]]:
        """Every (slot column, literal piece) that meet in some program, the slot first."""
        left, right = self.programs[..., :-1], self.programs[..., 1:]
        meet = (left < 0) & (left != -(EMPTY + 1)) & (right >= 0)
        return sorted(set(zip((-left[meet] - 1).tolist(), right[meet].tolist(), strict=True)))

    def fuse(self, ids: list[list[int]], token_labels: list[list[int]]) -> None:
        """Append a fused piece for every (slot piece, literal) pair of a program that the
        tokenizer joins, and record them: `fused_keys` (slot piece * key_base + literal,
        sorted) and `fused` for assembly, `junctions` for lengths."""
        texts = self.texts
        candidates = []  # (column, slot piece, literal) where both sides may join
        joinable: dict[int, list[int]] = {}  # column -> its pieces ending in punctuation
        for column, literal in self.junction_pairs():
            if not junctions.joinable(texts[literal][0]):
                continue
            if column not in joinable:
                first, count = self.columns[column]
                pieces = range(first, first + count)
                joinable[column] = [p for p in pieces if junctions.joinable(texts[p][-1])]
            candidates += [(column, piece, literal) for piece in joinable[column]]
        results = junctions.fuse(
            self.tokenizer,
            [(texts[a], texts[r]) for _, a, r in candidates],
            [ids[a] + ids[r] for _, a, r in candidates],
        )
        self.key_base = len(texts)
        keys, fused, changes = [], [], {}
        for (column, a, r), result in zip(candidates, results, strict=True):
            if result is not None:
                joint, in_slot = result
                keys.append(a * self.key_base + r)
                fused.append(len(ids))
                ids.append(joint)
                token_labels.append([self.labels[a] if s else LABEL["other"] for s in in_slot])
                first, count = self.columns[column]
                change = changes.setdefault((column, r), np.zeros(count, dtype=np.int64))
                change[a - first] = len(joint) - len(ids[a]) - len(ids[r])
        order = np.argsort(np.array(keys, dtype=np.int64))
        self.fused_keys = np.array(keys, dtype=np.int64)[order]
        self.fused = np.array(fused, dtype=np.int64)[order]
        self.count_junctions(changes)

    def count_junctions(self, changes: dict) -> None:
        """`junctions`: (column, literal, change in length per piece of the column) of each
        junction where some pair is fused; `junction_count[row, k]`: how often junction k
        occurs in a program row (rows as `programs.reshape(-1, width)`)."""
        self.junctions = [(column, r, change) for (column, r), change in changes.items()]
        refs = self.programs.reshape(-1, self.programs.shape[-1])
        self.junction_count = np.zeros((len(refs), len(self.junctions)), dtype=np.int64)
        for k, (column, r, _) in enumerate(self.junctions):
            meet = (refs[:, :-1] == -(column + 1)) & (refs[:, 1:] == r)
            self.junction_count[:, k] = meet.sum(1)

    def slots(self, people: np.ndarray) -> np.ndarray:
        """The piece of every slot for each person: [len(people), N_SLOTS]."""
        codes, fields = self.population.codes, self.population.fields
        n_middle, n_last = len(fields.lists["middle_names"]), len(fields.lists["last_names"])
        name = codes["name"][people].astype(np.int64)
        gender = codes["gender"][people].astype(np.int64)
        table = np.empty((len(people), N_SLOTS), dtype=np.int64)
        table[:, EMPTY] = 0
        for column in (SUBJECT_SLOT, SUBJECT_S_SLOT, POSSESSIVE_SLOT, OBJECT_SLOT):
            table[:, column] = self.columns[column][0] + gender
        table[:, FIRST] = self.columns[FIRST][0] + name // (n_middle * n_last)
        table[:, MIDDLE] = self.columns[MIDDLE][0] + name // n_last % n_middle
        table[:, LAST] = self.columns[LAST][0] + name % n_last
        for j, sentence in enumerate(SENTENCES):
            code = codes["employer" if sentence == "work_city" else sentence][people]
            table[:, VALUE + j] = self.columns[VALUE + j][0] + code.astype(np.int64)
        return table

    def choice_rows(self, people: np.ndarray, exposure) -> np.ndarray:
        """The program row of each person's six sentences at the given exposure, in the
        order they are told: [len(people), 6] indices of `programs.reshape(-1, width)`."""
        orders, template_ids = choices(self.population, people, exposure)
        orders = orders.astype(np.int64)
        templates = np.take_along_axis(template_ids, orders, axis=1)
        most = self.programs.shape[1]
        return (orders * most + templates) * 2 + (np.arange(len(SENTENCES)) > 0)

    def pieces(self, people: np.ndarray, exposure) -> tuple[np.ndarray, np.ndarray]:
        """The non-empty pieces of each person's unit at the given exposure, back to back,
        and the number of pieces of each unit."""
        width = self.programs.shape[-1]
        rows = self.choice_rows(people, exposure)
        refs = self.programs.reshape(-1, width)[rows].reshape(len(people), -1)
        where = np.flatnonzero(refs != -(EMPTY + 1))
        refs = refs.ravel()[where].astype(np.int64)
        person = where // (len(SENTENCES) * width)
        slot = np.flatnonzero(refs < 0)
        refs[slot] = self.slots(people).ravel()[person[slot] * N_SLOTS - refs[slot] - 1]
        if len(self.fused):
            keys = refs[:-1] * self.key_base + refs[1:]
            meet = np.flatnonzero(np.isin(keys, self.fused_keys))
            refs[meet] = self.fused[np.searchsorted(self.fused_keys, keys[meet])]
            refs[meet + 1] = 0  # the literal is inside the fused piece
            kept = self.length[refs] > 0
            refs, person = refs[kept], person[kept]
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
        rows = self.choice_rows(people, exposure)
        gender = self.population.codes["gender"][people].astype(np.int64)
        out = self.base_length[people] + self.row_length[gender[:, None], rows].sum(1)
        if self.junctions:
            out += (self.junction_count[rows].sum(1) * self.junction_changes(people)).sum(1)
        return out

    def expected_lengths(self, people) -> np.ndarray:
        """Each person's unit length averaged over every rendering choice (exact): each
        sentence opens the unit one time in six, and its templates are equally likely."""
        people = np.asarray(people, dtype=np.int64)
        most = self.programs.shape[1]
        used = np.zeros(self.row_length.shape[1])  # the probability of each program row
        for j, sentence in enumerate(SENTENCES):
            templates = self.population.fields.templates[sentence]
            rows = (j * most + np.arange(len(templates))) * 2
            used[rows] = 1 / len(SENTENCES) / len(templates)
            used[rows + 1] = (1 - 1 / len(SENTENCES)) / len(templates)
        gender = self.population.codes["gender"][people].astype(np.int64)
        out = self.base_length[people] + (self.row_length @ used)[gender]
        if self.junctions:
            out = out + self.junction_changes(people) @ (used @ self.junction_count)
        return out

    @cached_property
    def base_length(self) -> np.ndarray:
        """Per person, the tokens of the name and the six values (outside any fused
        piece): the part of a unit's length that no rendering choice changes."""
        out = np.empty(len(self.population), dtype=np.int32)
        for start in range(0, len(out), 1 << 20):
            people = np.arange(start, min(len(out), start + (1 << 20)))
            slot_length = self.length[self.slots(people)]
            out[people] = slot_length[:, [FIRST, MIDDLE, LAST, *range(VALUE, N_SLOTS)]].sum(1)
        return out

    @cached_property
    def row_length(self) -> np.ndarray:
        """[gender, program row]: tokens of a program row but its name and value slots:
        the opening pieces, the template's text and its pronouns."""
        refs = self.programs.reshape(-1, self.programs.shape[-1])
        literal = self.length[np.maximum(refs, 0)]
        out = []
        for g in (0, 1):
            slot_length = np.zeros(N_SLOTS, dtype=np.int64)
            for column in (SUBJECT_SLOT, SUBJECT_S_SLOT, POSSESSIVE_SLOT, OBJECT_SLOT):
                slot_length[column] = self.length[self.columns[column][0] + g]
            out.append(np.where(refs >= 0, literal, slot_length[np.maximum(-refs - 1, 0)]).sum(-1))
        return np.stack(out)

    def junction_changes(self, people: np.ndarray) -> np.ndarray:
        """[len(people), junctions]: the change in length a junction makes for each person
        (where the person's slot piece is fused with the junction's literal)."""
        slots = self.slots(people)
        return np.stack(
            [change[slots[:, c] - self.columns[c][0]] for c, _, change in self.junctions], axis=1
        )

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
        pieces = [np.unique(refs[refs >= 0]), self.fused] + [
            np.unique(self.slots(c)[:, columns]) for c in chunks
        ]
        piece_of_token = np.repeat(np.arange(len(self.length)), self.length)
        return np.unique(self.pool[np.isin(piece_of_token, np.concatenate(pieces))])

    def mismatches(self, people, exposure) -> list[int]:
        """People whose assembled tokens differ from the tokenizer run on their text: the
        invariant every tokenizer must keep (docs/design.md §3)."""
        people = np.asarray(people, dtype=np.int64)
        units = self.assemble(people, exposure)
        texts = [r.text for r in render_people(self.population, people, exposure)]
        encoded = encode(self.tokenizer, texts)
        return [int(p) for i, p in enumerate(people) if units.unit(i)[0][1:].tolist() != encoded[i]]


class Prefixed:
    """A table's units with a run's useful-data prefix: one special token right after
    each unit's end-of-text, labelled "other" (docs/design.md §4). Any table kind."""

    def __init__(self, table, prefix: str):
        self.table, self.population, self.eot = table, table.population, table.eot
        self.tokenizer = with_special(table.tokenizer, [prefix])
        self.prefix_id = self.tokenizer.token_to_id(prefix)

    def assemble(self, people, exposure) -> Units:
        units = self.table.assemble(people, exposure)
        after = units.offsets[:-1] + 1  # right after each end-of-text
        return Units(
            tokens=np.insert(units.tokens, after, self.prefix_id),
            labels=np.insert(units.labels, after, LABEL["other"]),
            offsets=units.offsets + np.arange(len(units.offsets)),
        )

    def lengths(self, people, exposure) -> np.ndarray:
        return self.table.lengths(people, exposure) + 1

    def expected_lengths(self, people) -> np.ndarray:
        return self.table.expected_lengths(people) + 1

    def used_ids(self, online: bool) -> np.ndarray:
        return np.union1d(self.table.used_ids(online), [self.prefix_id])

    def mismatches(self, people, exposure) -> list[int]:
        """The wrapped table's: the prefix is one special token, never merged."""
        return self.table.mismatches(people, exposure)
