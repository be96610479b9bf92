"""N made-up people: distinct full names and six uniform, independent attributes.

A population is a pure function of (seed, N, fields) (docs/design.md §9.1). Person i's
name is the i-th value of a keyed random bijection of [0, N0), so the N names are
distinct without storing N0 of anything; every attribute is a counter-based draw keyed
by (seed, attribute, person). Any person is therefore computable on its own
(`person_codes`), which is what lets junk data use populations that are never stored.
"""

from dataclasses import dataclass

import numpy as np

from bioknow.base.errors import InputError
from bioknow.base.progress import Progress
from bioknow.data import keyed
from bioknow.data.fields import KNOWLEDGE, OBJECT, POSSESSIVE, SUBJECT, Fields

CHUNK = 1 << 20
# Stream ids of the keyed draws; stable forever, since datasets depend on them.
NAME_STREAM = 1
ATTRIBUTE_STREAMS = {a: 2 + i for i, a in enumerate(KNOWLEDGE)}
# Smallest unsigned type for each code column.
CODE_DTYPES = {
    "name": np.uint32,
    "gender": np.uint8,
    "birth_date": np.uint32,
    "birth_city": np.uint16,
    "university": np.uint16,
    "major": np.uint16,
    "employer": np.uint16,
}


def person_code(fields: Fields, seed: int, key: str, people: np.ndarray) -> np.ndarray:
    """One code of the given people (indices into a population of any size <= N0):
    "name" in [0, N0), or a knowledge attribute's value code."""
    people = np.asarray(people, dtype=np.int64)
    if key == "name":
        code = keyed.permute(people, fields.n0, seed, NAME_STREAM)
    else:
        code = keyed.uniform_int(fields.cardinality(key), seed, ATTRIBUTE_STREAMS[key], people)
    return code.astype(CODE_DTYPES[key])


def person_codes(fields: Fields, seed: int, people: np.ndarray) -> dict[str, np.ndarray]:
    """Every code of the given people."""
    return {key: person_code(fields, seed, key, people) for key in CODE_DTYPES}


def check_size(fields: Fields, n: int) -> None:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
        raise InputError(f"N must be a whole number, got {n!r}")
    if n <= 0:
        raise InputError(f"N must be positive, got {n}")
    if n > fields.n0:
        raise InputError(f"N = {n} exceeds N0 = {fields.n0}, the number of distinct names")


@dataclass(frozen=True)
class Population:
    """Column arrays of codes, one entry per person, with the fields that decode them."""

    fields: Fields
    seed: int
    codes: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.codes["name"])

    @classmethod
    def build(cls, fields: Fields, seed: int, n: int, progress: bool = False) -> "Population":
        check_size(fields, n)
        codes = {k: np.empty(n, dtype=d) for k, d in CODE_DTYPES.items()}
        starts = range(0, n, CHUNK)
        with Progress(len(starts), "population", "chunk", enabled=progress) as bar:
            for start in starts:
                stop = min(start + CHUNK, n)
                for k, v in person_codes(fields, seed, np.arange(start, stop)).items():
                    codes[k][start:stop] = v
                bar.update(1)
        return cls(fields=fields, seed=seed, codes=codes)

    @classmethod
    def virtual(cls, fields: Fields, seed: int, n: int) -> "Population":
        """A population whose codes are computed per person when asked for and never
        stored: constant memory whatever N (junk data uses N = 1e8)."""
        check_size(fields, n)
        return cls(fields=fields, seed=seed, codes=_ComputedCodes(fields, seed, n))

    def name_parts(self, i: int) -> tuple[str, str, str]:
        """(first, middle, last) of person i."""
        n_middle, n_last = (len(self.fields.lists[k]) for k in ("middle_names", "last_names"))
        code = int(self.codes["name"][i])
        first, rest = divmod(code, n_middle * n_last)
        middle, last = divmod(rest, n_last)
        lists = self.fields.lists
        return lists["first_names"][first], lists["middle_names"][middle], lists["last_names"][last]

    def full_name(self, i: int) -> str:
        return " ".join(self.name_parts(i))

    def value(self, attribute: str, i: int) -> str:
        """The text of an attribute of person i (work_city: the employer's city)."""
        code = self.codes["employer" if attribute == "work_city" else attribute][i]
        return self.fields.values(attribute)[int(code)]

    def pronouns(self, i: int) -> tuple[str, str, str]:
        """(subject, possessive, object) pronouns of person i."""
        g = int(self.codes["gender"][i])
        return SUBJECT[g], POSSESSIVE[g], OBJECT[g]


class _ComputedColumn:
    """One code column of a virtual population: `column[people]` computes it."""

    def __init__(self, fields: Fields, seed: int, key: str, n: int):
        self.fields, self.seed, self.key, self.n = fields, seed, key, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, people) -> np.ndarray:
        people = np.asarray(people)
        if people.size and (people.min() < 0 or people.max() >= self.n):
            raise IndexError(f"person outside [0, {self.n})")
        return person_code(self.fields, self.seed, self.key, people)


class _ComputedCodes(dict):
    """The code columns of a virtual population."""

    def __init__(self, fields: Fields, seed: int, n: int):
        super().__init__({k: _ComputedColumn(fields, seed, k, n) for k in CODE_DTYPES})
