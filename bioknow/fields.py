"""Field lists and sentence templates: the vocabulary every biography is made of.

A fields folder (the default is `bioknow/templates/`, inside the package) holds plain
UTF-8 text, one item per line: the name pools, the attribute values and six files of
sentence templates (SPEC sections 2.1-2.3). Loading checks everything, and a problem is an
`InputError` that names the file and the line.
"""

import math
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from bioknow.errors import InputError

DEFAULT_DIR = Path(__file__).resolve().parent / "templates"

# file stem -> exact number of entries (SPEC sections 2.1, 2.2)
LISTS = {
    "first_names": 400,
    "middle_names": 400,
    "last_names": 1000,
    "cities": 200,
    "universities": 300,
    "majors": 100,
    "employers": 263,
}
# The six sentences of a biography, in their canonical order (SPEC section 2.3).
SENTENCES = ("birth_date", "birth_city", "university", "major", "employer", "work_city")
# The independent attributes whose values carry knowledge bits (SPEC section 2.2).
KNOWLEDGE = ("gender", "birth_date", "birth_city", "university", "major", "employer")
MIN_TEMPLATES = 45

GENDERS = ("female", "male")
SUBJECT = ("She", "He")  # indexed by gender code
POSSESSIVE = ("her", "his")
OBJECT = ("her", "him")
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
DAYS = 28
FIRST_YEAR, YEARS = 1900, 200

SLOTS = ("subject", "value", "possessive", "object")
_SLOT = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"[A-Za-z]+")
_VALUE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9 .,&'-]*[A-Za-z0-9])?")
_CITY = re.compile(r"[A-Za-z][A-Za-z .'-]*[A-Za-z], [A-Z]{2}")


@dataclass(frozen=True)
class Template:
    """One sentence template, split into ("text", literal) and ("slot", name) parts."""

    text: str
    parts: tuple[tuple[str, str], ...]


def birth_date_text(code: int) -> str:
    """The birth date of code c in [0, 12 * 28 * 200): "Month D, YYYY"."""
    month, rest = divmod(int(code), DAYS * YEARS)
    day, year = divmod(rest, YEARS)
    return f"{MONTHS[month]} {day + 1}, {FIRST_YEAR + year}"


@dataclass(frozen=True)
class Fields:
    """The loaded, checked contents of a fields folder."""

    root: Path
    lists: dict[str, tuple[str, ...]]  # file stem -> entries (employers: company names)
    employer_cities: tuple[str, ...]  # headquarters city of each employer
    templates: dict[str, tuple[Template, ...]]  # sentence -> templates

    @cached_property
    def birth_dates(self) -> tuple[str, ...]:
        return tuple(birth_date_text(c) for c in range(len(MONTHS) * DAYS * YEARS))

    def values(self, attribute: str) -> tuple[str, ...]:
        """The value strings of an attribute, indexed by its code. The work city is
        indexed by the employer's code: it is the employer's headquarters."""
        return {
            "gender": GENDERS,
            "birth_date": self.birth_dates,
            "birth_city": self.lists["cities"],
            "university": self.lists["universities"],
            "major": self.lists["majors"],
            "employer": self.lists["employers"],
            "work_city": self.employer_cities,
        }[attribute]

    def cardinality(self, attribute: str) -> int:
        if attribute == "birth_date":
            return len(MONTHS) * DAYS * YEARS
        return len(self.values(attribute))

    @property
    def n0(self) -> int:
        """N0: the number of distinct full names (SPEC section 2.1)."""
        return math.prod(len(self.lists[k]) for k in ("first_names", "middle_names", "last_names"))

    @property
    def log2_s0(self) -> float:
        """log2 S0: bits of the six independent attributes of a person (SPEC section 2.2)."""
        return sum(math.log2(self.cardinality(a)) for a in KNOWLEDGE)

    def files(self) -> dict[str, str]:
        """Relative path -> normalized text (LF line ends) of every file of the folder."""
        out = {}
        for stem, entries in self.lists.items():
            if stem == "employers":
                entries = [f"{c}; {h}" for c, h in zip(entries, self.employer_cities, strict=True)]
            out[f"{stem}.txt"] = "".join(e + "\n" for e in entries)
        for sentence, templates in self.templates.items():
            out[f"sentences/{sentence}.txt"] = "".join(t.text + "\n" for t in templates)
        return out

    def write(self, folder: Path) -> None:
        """Write the fields as a folder that `load` reads back unchanged."""
        for rel, text in self.files().items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8", newline="\n")


def read_lines(path: Path, what: str = "fields file") -> list[str]:
    """The lines of a one-item-per-line UTF-8 file (CRLF tolerated); a missing file, a
    blank line or stray white space at either end is an InputError naming file and line."""
    if not path.is_file():
        raise InputError(f"{path}: missing {what}")
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: unreadable ({e})") from None
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise InputError(f"{path} line {number}: blank entry")
        if line != line.strip():
            raise InputError(f"{path} line {number}: leading or trailing white space")
    return lines


def _check_unique(path: Path, entries: list[str]) -> None:
    seen: dict[str, int] = {}
    for number, entry in enumerate(entries, 1):
        key = entry.casefold()
        if key in seen:
            raise InputError(f"{path} line {number}: duplicate entry {entry!r} (line {seen[key]})")
        seen[key] = number


def _check_value(path: Path, number: int, value: str, pattern: re.Pattern, what: str) -> None:
    if not pattern.fullmatch(value) or "  " in value:
        raise InputError(f"{path} line {number}: malformed {what} {value!r}")


def split_slots(text: str, allowed, fail, glued: str = "{_") -> tuple[tuple[str, str], ...]:
    """Split a template into ("text", literal) and ("slot", name) parts, checking that
    every slot is allowed, follows a space (or opens the text) and is not glued to a
    letter, a digit or a character of `glued`, so that every slot boundary is a tokenizer
    boundary (DESIGN section 2). `fail(why)` makes the error."""
    parts: list[tuple[str, str]] = []
    position = 0
    for match in _SLOT.finditer(text):
        name, start, end = match.group(1), match.start(), match.end()
        if name not in allowed:
            raise fail(f"unknown slot {{{name}}} (allowed: {', '.join(allowed)})")
        if start > 0 and text[start - 1] != " ":
            raise fail(f"slot {{{name}}} must follow a space")
        if end < len(text) and (text[end].isalnum() or text[end] in glued):
            raise fail(f"slot {{{name}}} is glued to what follows")
        if start > position:
            parts.append(("text", text[position:start]))
        parts.append(("slot", name))
        position = end
    if position < len(text):
        parts.append(("text", text[position:]))
    if any("{" in p or "}" in p for kind, p in parts if kind == "text"):
        raise fail("stray brace")
    return tuple(parts)


def parse_template(path: Path, number: int, text: str) -> Template:
    """Split a template into parts and check the rules that keep every slot boundary a
    tokenizer boundary: it opens with "{subject} ", holds {value} exactly once, and no
    slot is glued to a letter or digit (DESIGN section 2)."""

    def fail(why: str) -> InputError:
        return InputError(f"{path} line {number}: {why}: {text!r}")

    if not text.startswith("{subject} "):
        raise fail('a template must start with "{subject} "')
    parts = split_slots(text, SLOTS, fail)
    slots = [p for k, p in parts if k == "slot"]
    if slots.count("subject") != 1 or slots.count("value") != 1:
        raise fail("a template needs {subject} once and {value} once")
    if "  " in text or not text.endswith("."):
        raise fail("a template is one sentence ending with '.' and single spaces")
    return Template(text=text, parts=parts)


def load(folder: Path | str | None = None) -> Fields:
    """Load and check a fields folder (default: the package's `templates/`)."""
    root = Path(folder) if folder is not None else DEFAULT_DIR
    if not root.is_dir():
        raise InputError(f"{root}: fields folder not found")
    lists: dict[str, tuple[str, ...]] = {}
    employer_cities: tuple[str, ...] = ()
    for stem, size in LISTS.items():
        path = root / f"{stem}.txt"
        lines = read_lines(path)
        if len(lines) != size:
            raise InputError(f"{path}: {len(lines)} entries, expected {size}")
        if stem == "employers":
            companies, cities = [], []
            for number, line in enumerate(lines, 1):
                company, sep, city = line.partition("; ")
                if not sep or ";" in company or ";" in city:
                    raise InputError(
                        f"{path} line {number}: expected 'Company; City, ST', got {line!r}"
                    )
                _check_value(path, number, company, _VALUE, "company name")
                _check_value(path, number, city, _CITY, "headquarters city")
                companies.append(company)
                cities.append(city)
            _check_unique(path, companies)
            lines, employer_cities = companies, tuple(cities)
        else:
            pattern, what = {
                "cities": (_CITY, "city ('City, ST')"),
                "universities": (_VALUE, "university"),
                "majors": (_VALUE, "major"),
            }.get(stem, (_NAME, "name (letters only)"))
            for number, line in enumerate(lines, 1):
                _check_value(path, number, line, pattern, what)
            _check_unique(path, lines)
        lists[stem] = tuple(lines)

    templates = {}
    for sentence in SENTENCES:
        path = root / "sentences" / f"{sentence}.txt"
        lines = read_lines(path)
        if len(lines) < MIN_TEMPLATES:
            raise InputError(f"{path}: {len(lines)} templates, expected at least {MIN_TEMPLATES}")
        _check_unique(path, lines)
        templates[sentence] = tuple(parse_template(path, n, t) for n, t in enumerate(lines, 1))
    return Fields(root=root, lists=lists, employer_cities=employer_cities, templates=templates)
