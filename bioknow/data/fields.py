"""Field lists and sentence templates: the vocabulary every biography is made of.

A fields folder (the default is `bioknow/data/templates/`, inside the package) holds plain
UTF-8 text, one item per line: the name pools, the attribute values and six files of
sentence templates (docs/design.md §2.1-2.3). The layout of the paper's own field lists
(`first_name.txt`, `city.txt`, `field.txt`, `company.txt`, ... and no templates) is read
as it is: their file names map to ours, their placeholders ({name}, {birthday}, ...) to
our slots, and a folder without `sentences/` takes the package's templates. The lists may
have any sizes; N0 and S0 follow from them. Loading checks everything and reports every
problem at once, in one `InputError` that names each file and line.
"""

import math
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from bioknow.base.errors import InputError

DEFAULT_DIR = Path(__file__).resolve().parent / "templates"

# file stem -> the size of bioknow's own list (docs/design.md §2.1, 2.2); a folder's lists
# may have other sizes
LISTS = {
    "first_names": 400,
    "middle_names": 400,
    "last_names": 1000,
    "cities": 200,
    "universities": 300,
    "majors": 100,
    "employers": 263,
}
# The six sentences of a biography, in their canonical order (docs/design.md §2.3).
SENTENCES = ("birth_date", "birth_city", "university", "major", "employer", "work_city")
# The independent attributes whose values carry knowledge bits (docs/design.md §2.2).
KNOWLEDGE = ("gender", "birth_date", "birth_city", "university", "major", "employer")
MIN_TEMPLATES = 45
# The file names of the paper's field lists (PhysicsLM4, Capo-bioS-bioR/fields/).
PAPER_NAMES = {
    "first_names": "first_name",
    "middle_names": "middle_name",
    "last_names": "last_name",
    "cities": "city",
    "universities": "university",
    "majors": "field",
    "employers": "company",
}
MAX_VALUES = 2**16 - 1  # an attribute's codes are stored as uint16
MAX_N0 = 2**32  # name codes are stored as uint32
SHOWN_PROBLEMS = 20  # problems named in the one error line; the rest are counted

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
# "{subject}'s": the full name and "'s" opening the biography, else "Her" or "His"
SUBJECT_S = "subject's"
# The placeholders of the paper's templates: {name} is {subject}, and each sentence has
# its own name for {value}.
SUBJECT_ALIAS = "name"
VALUE_ALIASES = {
    "birth_date": "birthday",
    "birth_city": "birthcity",
    "university": "university",
    "major": "field",
    "employer": "company1name",
    "work_city": "company1city",
}
_SLOT = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"[^\W\d_](?:\S*[^\W\d_])?")  # one word, from a letter to a letter


@dataclass(frozen=True)
class Template:
    """One sentence template, split into ("text", literal) and ("slot", name) parts; a
    name is one of SLOTS, or SUBJECT_S for "{subject}'s"."""

    text: str
    parts: tuple[tuple[str, str], ...]


def template_text(parts) -> str:
    """The text of a template's parts, in bioknow's own slot names."""
    return "".join(
        ("{subject}'s" if p == SUBJECT_S else f"{{{p}}}") if kind == "slot" else p
        for kind, p in parts
    )


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
        years = range(FIRST_YEAR, FIRST_YEAR + YEARS)  # in code order: birth_date_text's
        return tuple(f"{m} {d}, {y}" for m in MONTHS for d in range(1, DAYS + 1) for y in years)

    def values(self, attribute: str) -> tuple[str, ...]:
        """The value strings of an attribute, indexed by its code. The work city is
        indexed by the employer's code: it is the employer's headquarters."""
        if attribute == "birth_date":  # 67,200 texts, made only when asked for
            return self.birth_dates
        return {
            "gender": GENDERS,
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
        """N0: the number of distinct full names (docs/design.md §2.1)."""
        return math.prod(len(self.lists[k]) for k in ("first_names", "middle_names", "last_names"))

    @property
    def log2_s0(self) -> float:
        """log2 S0: bits of the six independent attributes of a person (docs/design.md §2.2)."""
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


def read_text_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (CRLF line ends and a byte-order mark tolerated);
    an unreadable file is an InputError naming it."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: unreadable ({e})") from None
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def line_problem(line: str) -> str | None:
    """What is wrong with a line of a one-item-per-line file, if anything."""
    if not line.strip():
        return "blank entry"
    if line != line.strip():
        return "leading or trailing white space"
    return None


def read_lines(path: Path, what: str = "fields file") -> list[str]:
    """The lines of a one-item-per-line UTF-8 file; a missing file, a blank line or stray
    white space at either end is an InputError naming file and line."""
    if not path.is_file():
        raise InputError(f"{path}: missing {what}")
    lines = read_text_lines(path)
    for number, line in enumerate(lines, 1):
        why = line_problem(line)
        if why:
            raise InputError(f"{path} line {number}: {why}")
    return lines


class Problems:
    """Every problem found in a fields folder, so that one error reports them all."""

    def __init__(self, root: Path):
        self.root, self.items = root, []

    def add(self, path: Path, why: str, number: int | None = None) -> None:
        where = path.relative_to(self.root) if path.is_relative_to(self.root) else path
        self.items.append(f"{where}{'' if number is None else f' line {number}'}: {why}")

    def lines(self, path: Path) -> list[str]:
        """A file's lines, each blank or padded line a problem; [] if it is unreadable."""
        try:
            lines = read_text_lines(path)
        except InputError as e:
            self.add(path, str(e).removeprefix(f"{path}: "))
            return []
        for number, line in enumerate(lines, 1):
            why = line_problem(line)
            if why:
                self.add(path, why, number)
        return lines

    def unique(self, path: Path, entries: list[str]) -> None:
        seen: dict[str, int] = {}
        for number, entry in enumerate(entries, 1):
            key = entry.casefold()
            if key in seen and entry.strip():
                self.add(path, f"duplicate entry {entry!r} (line {seen[key]})", number)
            seen.setdefault(key, number)

    def check(self) -> None:
        """Raise one InputError naming every problem (the first SHOWN_PROBLEMS of them)."""
        if not self.items:
            return
        shown = "; ".join(self.items[:SHOWN_PROBLEMS])
        hidden = len(self.items) - SHOWN_PROBLEMS
        more = f"; and {hidden} more" if hidden > 0 else ""
        count = f"{len(self.items)} problem{'s' if len(self.items) > 1 else ''}"
        raise InputError(f"fields folder {self.root}: {count}: {shown}{more}")


def value_problem(value: str, kind: str) -> str | None:
    """What is wrong with a field value, if anything. Any printable text on single spaces
    is a value ("Caterpillar Inc.", "Winston–Salem, NC", "Toronto, Canada"); a name is
    one word from a letter to a letter ("O'Brien")."""
    if not value.strip():
        return None  # reported as a blank line
    if kind == "name":
        if not _NAME.fullmatch(value):
            return f"malformed name {value!r} (one word, from a letter to a letter)"
        return None
    if not value.isprintable() or "  " in value:
        return f"malformed {kind} {value!r} (printable text on single spaces)"
    if not any(c.isalnum() for c in value):
        return f"malformed {kind} {value!r} (no letter or digit)"
    return None


def split_slots(text: str, allowed, fail, glued: str = "{_") -> tuple[tuple[str, str], ...]:
    """Split a template into ("text", literal) and ("slot", name) parts, checking that
    every slot is allowed, follows a space (or opens the text) and is not glued to a
    letter, a digit or a character of `glued`, so that every slot boundary is a tokenizer
    boundary (docs/design.md §3). `allowed` is a tuple of names or a mapping of names
    (aliases too) to slot names. `fail(why)` makes the error."""
    names = allowed if isinstance(allowed, dict) else {a: a for a in allowed}
    parts: list[tuple[str, str]] = []
    position = 0
    for match in _SLOT.finditer(text):
        name, start, end = match.group(1), match.start(), match.end()
        if name not in names:
            raise fail(f"unknown slot {{{name}}} (allowed: {', '.join(names)})")
        if start > 0 and text[start - 1] != " ":
            raise fail(f"slot {{{name}}} must follow a space")
        if end < len(text) and (text[end].isalnum() or text[end] in glued):
            raise fail(f"slot {{{name}}} is glued to what follows")
        if start > position:
            parts.append(("text", text[position:start]))
        parts.append(("slot", names[name]))
        position = end
    if position < len(text):
        parts.append(("text", text[position:]))
    if any("{" in p or "}" in p for kind, p in parts if kind == "text"):
        raise fail("stray brace")
    return tuple(parts)


def parse_template(where: str, text: str, sentence: str) -> Template:
    """Split a template of a sentence into parts and check the rules that keep every slot
    boundary a tokenizer boundary: it opens with "{subject} " or "{subject}'s ", holds
    {value} exactly once, and no slot is glued to a letter or digit (docs/design.md §3).
    {name} and the sentence's placeholder of the paper's templates ({birthday}, ...) are
    read as {subject} and {value}; `where` names file and line in an error."""

    def fail(why: str) -> InputError:
        return InputError(f"{where}: {why}: {text!r}")

    allowed = {**{s: s for s in SLOTS}, SUBJECT_ALIAS: "subject", VALUE_ALIASES[sentence]: "value"}
    parts = split_slots(text, allowed, fail)
    if parts[0] != ("slot", "subject") or not (
        len(parts) > 1 and parts[1][0] == "text" and parts[1][1].startswith((" ", "'s "))
    ):
        raise fail('a template must start with "{subject} " or "{subject}\'s "')
    if parts[1][1].startswith("'s "):
        parts = (("slot", SUBJECT_S), ("text", parts[1][1][2:]), *parts[2:])
    slots = [p for k, p in parts if k == "slot"]
    if slots.count(parts[0][1]) != 1 or "subject" in slots[1:] or slots.count("value") != 1:
        raise fail("a template needs {subject} once and {value} once")
    if "  " in text or not text.endswith("."):
        raise fail("a template is one sentence ending with '.' and single spaces")
    return Template(text=template_text(parts), parts=parts)


def list_path(root: Path, stem: str, problems: Problems) -> Path | None:
    """The file of a list: bioknow's name or the paper's (first_names.txt or
    first_name.txt); neither or both is a problem."""
    found = [root / f"{name}.txt" for name in (stem, PAPER_NAMES[stem])]
    found = [p for p in found if p.is_file()]
    if len(found) == 1:
        return found[0]
    why = "both present: keep one" if found else "missing"
    problems.add(root / f"{stem}.txt", f"{why} ({stem}.txt or {PAPER_NAMES[stem]}.txt)")
    return None


def read_employers(path: Path, lines: list[str], problems: Problems):
    """Company names and headquarters of "Company; City" lines."""
    companies, cities = [], []
    for number, line in enumerate(lines, 1):
        company, sep, city = line.partition("; ")
        if not sep or ";" in company or ";" in city:
            problems.add(path, f"expected 'Company; City', got {line!r}", number)
        else:
            for value, kind in ((company, "company name"), (city, "headquarters city")):
                why = value_problem(value, kind)
                if why:
                    problems.add(path, why, number)
        companies.append(company)
        cities.append(city)
    problems.unique(path, companies)
    return companies, cities


def read_lists(root: Path, problems: Problems):
    """The lists of a folder (employers: company names) and the employers' cities."""
    lists: dict[str, tuple[str, ...]] = {}
    employer_cities: list[str] = []
    for stem in LISTS:
        path = list_path(root, stem, problems)
        lines = problems.lines(path) if path else []
        if stem == "employers":
            lines, employer_cities = read_employers(path, lines, problems)
        elif path:
            kind = {"cities": "city", "universities": "university", "majors": "major"}
            for number, line in enumerate(lines, 1):
                why = value_problem(line, kind.get(stem, "name"))
                if why:
                    problems.add(path, why, number)
            problems.unique(path, lines)
        if path and not lines:
            problems.add(path, "no entries")
        if path and stem not in ("first_names", "middle_names", "last_names"):
            if len(lines) > MAX_VALUES:
                problems.add(path, f"{len(lines):,} entries, at most {MAX_VALUES:,}")
        lists[stem] = tuple(lines)
    names = [len(lists[k]) for k in ("first_names", "middle_names", "last_names")]
    if math.prod(names) > MAX_N0:
        problems.add(root, f"N0 = {math.prod(names):,} names, at most {MAX_N0:,}")
    return lists, tuple(employer_cities)


def read_templates(root: Path, problems: Problems) -> dict[str, tuple[Template, ...]]:
    """The templates of `root/sentences/`, or the package's if the folder has none."""
    folder = root / "sentences" if (root / "sentences").is_dir() else DEFAULT_DIR / "sentences"
    templates = {}
    for sentence in SENTENCES:
        path = folder / f"{sentence}.txt"
        if not path.is_file():
            problems.add(path, "missing")
            continue
        lines = problems.lines(path)
        if len(lines) < MIN_TEMPLATES:
            problems.add(path, f"{len(lines)} templates, expected at least {MIN_TEMPLATES}")
        problems.unique(path, lines)
        parsed = []
        for number, line in enumerate(lines, 1):
            rel = path.relative_to(root) if path.is_relative_to(root) else path
            try:
                parsed.append(parse_template(f"{rel} line {number}", line, sentence))
            except InputError as e:
                problems.items.append(str(e))
        templates[sentence] = tuple(parsed)
    return templates


def load(folder: Path | str | None = None) -> Fields:
    """Load and check a fields folder (default: the package's `templates/`); every
    problem of the folder is reported in one InputError."""
    root = Path(folder) if folder is not None else DEFAULT_DIR
    if not root.is_dir():
        raise InputError(f"{root}: fields folder not found")
    problems = Problems(root)
    lists, employer_cities = read_lists(root, problems)
    templates = read_templates(root, problems)
    problems.check()
    return Fields(root=root, lists=lists, employer_cities=employer_cities, templates=templates)
