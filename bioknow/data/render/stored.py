"""Units from fixed, stored renderings (bioR-style: 40 per person).

The renderings are tokenized once, when the dataset is built, and every token gets the
label of the span its characters fall in (docs/design.md §4: each rendering used equally
often). Exposure e of person p uses rendering (e + shift_p) mod R, with a keyed shift
per person, so every R consecutive rounds use each of a person's renderings once.
"""

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from bioknow.data import keyed
from bioknow.data.population import Population
from bioknow.data.render.bios import Rendering
from bioknow.data.render.tokens import LABEL, Units
from bioknow.data.tokenizer import eot_id

SHIFT_STREAM = 50
FILES = ("tokens.npy", "labels.npy", "offsets.npy")


def tokenize(tokenizer: Tokenizer, renderings: list[Rendering]) -> tuple[np.ndarray, ...]:
    """Tokens, labels and offsets of renderings: the label of a token is the label of the
    span holding its first character (after a leading space), else "other"."""
    encodings = tokenizer.encode_batch([r.text for r in renderings], add_special_tokens=False)
    tokens, labels, lengths = [], [], []
    for r, e in zip(renderings, encodings, strict=True):
        chars = np.zeros(len(r.text) + 1, dtype=np.uint8)
        for s in r.spans:
            chars[s.start : s.end] = LABEL[s.label]
        starts = np.array([a for a, _ in e.offsets], dtype=np.int64)
        starts += np.array([r.text[a] == " " for a in starts], dtype=np.int64)
        tokens.append(np.array(e.ids, dtype=np.int32))
        labels.append(chars[starts])
        lengths.append(len(e.ids))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return np.concatenate(tokens), np.concatenate(labels), offsets


class StoredTable:
    """The token table of stored renderings: R per person, rendering (p, k) at index
    p * R + k of `offsets`."""

    def __init__(
        self,
        population: Population,
        tokenizer: Tokenizer,
        per_person: int,
        tokens: np.ndarray,
        labels: np.ndarray,
        offsets: np.ndarray,
    ):
        if len(offsets) != len(population) * per_person + 1:
            raise ValueError("stored renderings do not match the population")
        self.population, self.tokenizer, self.per_person = population, tokenizer, per_person
        self.tokens, self.labels, self.offsets = tokens, labels, offsets
        self.eot = eot_id(tokenizer)

    @classmethod
    def load(cls, folder, population: Population, tokenizer: Tokenizer, per_person: int):
        arrays = [np.load(Path(folder) / name) for name in FILES]
        return cls(population, tokenizer, per_person, *arrays)

    def save(self, folder) -> None:
        for name, array in zip(FILES, (self.tokens, self.labels, self.offsets), strict=True):
            np.save(Path(folder) / name, array)

    def index(self, people, exposure) -> np.ndarray:
        """The stored rendering each person uses at an exposure."""
        people = np.asarray(people, dtype=np.int64)
        shift = keyed.uniform_int(self.per_person, self.population.seed, SHIFT_STREAM, people)
        return people * self.per_person + (np.asarray(exposure) + shift) % self.per_person

    def assemble(self, people, exposure) -> Units:
        """End-of-text, then the chosen rendering's tokens, for each person."""
        index = self.index(people, exposure)
        starts, stops = self.offsets[index], self.offsets[index + 1]
        lengths = stops - starts + 1
        ends = np.cumsum(lengths)
        source = np.arange(int(ends[-1])) - np.repeat(ends - lengths, lengths)
        source += np.repeat(starts - 1, lengths)  # position 0 of a unit: the end-of-text
        first = np.concatenate([[0], ends[:-1]])
        tokens, labels = self.tokens[source], self.labels[source]
        tokens[first], labels[first] = self.eot, LABEL["other"]
        return Units(tokens=tokens, labels=labels, offsets=np.concatenate([[0], ends]))

    def lengths(self, people, exposure) -> np.ndarray:
        index = self.index(people, exposure)
        return self.offsets[index + 1] - self.offsets[index] + 1

    def expected_lengths(self, people) -> np.ndarray:
        """Each person's unit length averaged over the R renderings."""
        people = np.asarray(people, dtype=np.int64)
        per = np.diff(self.offsets).reshape(-1, self.per_person)[people]
        return per.mean(1) + 1

    def used_ids(self, online: bool) -> np.ndarray:
        return np.union1d(np.unique(self.tokens), [self.eot])

    def mismatches(self, people, exposure) -> list[int]:
        """None: the tokens are the tokenizer's own output on the stored texts."""
        return []
