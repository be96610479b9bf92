"""bioR-style biographies: free-form rewrites of a person's six facts, with exact spans.

The paper's bioR data had LLaMA-2 rewrite every biography 40 times. Offline, a grammar
plays the language model. Its building blocks are data files in `bioknow/data/templates/bior/`, one
item per line:

    vp.txt, vp_present.txt  verb phrases after a subject, past and present tense:
                            "studied {major} at {university}", "works for {employer}"
    intro.txt               phrases fronted before the subject: "Born in {birth_city}"
    after.txt               trailing phrases about an earlier stage: "having majored in {major}"
    before.txt              trailing phrases about a later stage: "before joining {employer}"
    patterns.txt            sentences made of those: "{intro}, {subject} {vp} {and} {vp}."
    connectives.txt         fill {and}: join two phrases in any order of life ("and")
    connectives_later.txt   fill {then}: the next phrase comes later in life ("and later")
    openers.txt             fill {opener}: a sentence adverb ("Notably,")
    closers.txt             fill {closer}: a remark that states nothing ("something she ...")
    filler.txt              sentences that state no attribute ("Colleagues describe {object} ...")
    titles.txt              "Female; Male" titles ("Ms.; Mr.") for references like "Ms. Forger"

A phrase states the attributes whose slots it holds (one, or two). A rendering splits the
six attributes into sentences of two or three (one of 110 ordered groupings), then writes
each sentence with a pattern and phrases that cover its attributes exactly, in an order
of life that reads right: birth (date, city) before university (name, major) before work
(employer, city) wherever the wording implies an order. The full name opens the text;
later sentences refer to the person by pronoun, first name or title and last name, and
0-2 filler sentences are mixed in. A phrase, connective or remark whose content words
were already used in the rendering is drawn again (up to `ATTEMPTS` times).

Every choice is a counter-based draw keyed by (population seed, person, rendering index),
so a rendering is a pure function of those and any person renders on its own. The k-th
rendering uses the k-th grouping of a keyed shuffle of the 110, so a person's
`RENDERINGS` renderings never share a grouping: their sentences state different sets of
attributes, so their texts differ.

`rewrite` lets a local transformers causal LM write the biographies instead, keeping an
output only if it states every value verbatim exactly once.
"""

import itertools
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from bioknow.base.errors import InputError
from bioknow.data import keyed
from bioknow.data.fields import (
    DEFAULT_DIR,
    GENDERS,
    OBJECT,
    POSSESSIVE,
    SENTENCES,
    SUBJECT,
    read_lines,
    split_slots,
)
from bioknow.data.population import Population
from bioknow.data.render.bios import Rendering, Span

RENDERINGS = 40
GRAMMAR_DIR = DEFAULT_DIR / "bior"
# Keyed-draw streams (bios.py uses 20); stable, since renderings depend on them.
PLAN_STREAM, CHOICE_STREAM = 30, 31

# Stage of life of each attribute; phrases are ordered by it where the wording says so.
STAGE = {
    "birth_date": 0,
    "birth_city": 0,
    "university": 1,
    "major": 1,
    "employer": 2,
    "work_city": 2,
}
PRONOUN_SLOTS = ("pronoun", "possessive", "object")  # "she", "her", "her": "gender" spans
PHRASE_ROLES = ("vp", "intro", "after", "before")
WORD_SLOTS = ("and", "then", "opener")
PATTERN_SLOTS = ("subject", "closer", *WORD_SLOTS, *PHRASE_ROLES, *PRONOUN_SLOTS)
# A later reference to the person: a pronoun 6 times in 10, the first name 2, title + last 2.
PRONOUN_WEIGHT, FIRST_NAME_WEIGHT, REFERENCE_WEIGHTS = 6, 2, 10
FILLER_COUNTS = (0, 1, 2, 2)  # filler sentences per rendering, drawn uniformly from these
ATTEMPTS = 8  # draws of a phrase whose content words repeat earlier ones, then it stays
# Words that may repeat within a rendering; any other word of 3+ letters may not.
STOPWORDS = frozenset(
    "and the for with from that where which into its his her him she was has had are "
    "also this there their".split()
)
CHUNK = 4096  # people per vectorized batch of draws

_FILES = {
    "vp": "vp.txt",
    "vp_present": "vp_present.txt",
    "intro": "intro.txt",
    "after": "after.txt",
    "before": "before.txt",
    "patterns": "patterns.txt",
    "and": "connectives.txt",
    "then": "connectives_later.txt",
    "opener": "openers.txt",
    "closer": "closers.txt",
    "filler": "filler.txt",
    "titles": "titles.txt",
}
_WORD = re.compile(r"[a-z]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def content_words(text: str) -> frozenset[str]:
    """The words of a text that may not repeat within a rendering."""
    return frozenset(w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in STOPWORDS)


# ---------------------------------------------------------------------------- grammar


@dataclass(frozen=True)
class Piece:
    """A line of a grammar file, split into ("text", literal) and ("slot", name) parts."""

    text: str
    parts: tuple[tuple[str, str], ...]

    @property
    def slots(self) -> tuple[str, ...]:
        return tuple(p for kind, p in self.parts if kind == "slot")

    @property
    def words(self) -> frozenset[str]:
        return content_words(" ".join(p for kind, p in self.parts if kind == "text"))


@dataclass(frozen=True)
class Phrase:
    """A phrase stating `attributes`, whose stages of life span [lo, hi]."""

    piece: Piece
    attributes: frozenset[str]
    lo: int
    hi: int
    past: bool  # a past-tense verb phrase (or a phrase of another role: tenseless)
    trailing: bool  # it ends with a remark (", a subject that ...") or has its own "and"

    @property
    def words(self) -> frozenset[str]:
        return self.piece.words


@dataclass(frozen=True)
class Slot:
    """A phrase slot of a pattern: its role, whether {then} precedes it (it must come
    later in life than the phrase before it), whether it must be in the past tense and
    whether it ends the sentence (only then may its phrase end with a remark)."""

    role: str
    later: bool
    past: bool
    final: bool


@dataclass(frozen=True)
class Grammar:
    """The loaded, checked contents of a bioR grammar folder."""

    root: Path
    phrases: dict[str, dict[frozenset[str], tuple[Phrase, ...]]]  # role -> attributes -> ...
    patterns: tuple[Piece, ...]
    slots: tuple[tuple[Slot, ...], ...]  # the phrase slots of each pattern
    words: dict[str, tuple[str, ...]]  # "and", "then", "opener" -> plain strings
    closers: tuple[Piece, ...]
    fillers: tuple[Piece, ...]
    titles: tuple[tuple[str, str], ...]  # (female, male)
    _structures: dict = field(default_factory=dict, compare=False, repr=False)

    def options(self, slot: Slot, attributes: frozenset[str]) -> tuple[Phrase, ...]:
        """The phrases that can fill a slot with the given attributes."""
        found = self.phrases[slot.role].get(attributes, ())
        return tuple(
            p for p in found if (p.past or not slot.past) and (slot.final or not p.trailing)
        )

    def structures(self, group: frozenset[str], first: bool) -> tuple[tuple, ...]:
        """Every way to write a sentence stating exactly `group`: (pattern index, the
        attribute sets of its phrase slots), grouped by pattern so that a draw picks
        the pattern first. The first sentence opens with the subject (the full name)."""
        key = (group, first)
        if key not in self._structures:
            found = []
            for index, pattern in enumerate(self.patterns):
                if first and not pattern.text.startswith("{subject} "):
                    continue
                ways = tuple(self.covers(self.slots[index], group))
                if ways:
                    found.append((index, ways))
            if not found:
                raise InputError(f"{self.root}: no pattern can state {sorted(group)}")
            self._structures[key] = tuple(found)
        return self._structures[key]

    def covers(self, slots: tuple[Slot, ...], group: frozenset[str]):
        """Yield the attribute sets of `slots` for every way to state `group` exactly
        (each attribute once) whose order of life reads right: {intro} comes before
        every {vp}; {after} before its {vp} (the one before it, else the one after);
        {before}, and a phrase after {then}, after the phrase just before them."""
        options = [
            [s for s in self.phrases[slot.role] if s <= group and self.options(slot, s)]
            for slot in slots
        ]
        vps = [i for i, slot in enumerate(slots) if slot.role == "vp"]
        for sets in itertools.product(*options):
            if sum(len(s) for s in sets) != len(group) or frozenset().union(*sets) != group:
                continue
            lo = [min(STAGE[a] for a in s) for s in sets]
            hi = [max(STAGE[a] for a in s) for s in sets]
            fits = True
            for i, slot in enumerate(slots):
                if slot.role == "intro":
                    fits &= all(hi[i] < lo[j] for j in vps)
                elif slot.role == "after":
                    anchor = max([j for j in vps if j < i], default=min(vps))
                    fits &= hi[i] < lo[anchor]
                if slot.role == "before" or slot.later:
                    fits &= lo[i] > hi[i - 1]
            if fits:
                yield sets


def _read(path: Path) -> list[str]:
    """A grammar file's lines: no blank lines, single spaces, no duplicates."""
    lines = read_lines(path, "bioR grammar file")
    if not lines:
        raise InputError(f"{path}: no entries")
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if "  " in line or "\t" in line:
            raise InputError(f"{path} line {number}: stray white space: {line!r}")
        if line in seen:
            raise InputError(f"{path} line {number}: duplicate of line {seen[line]}: {line!r}")
        seen[line] = number
    return lines


class _Line:
    """A line of a grammar file being checked."""

    def __init__(self, path: Path, number: int, text: str):
        self.path, self.number, self.text = path, number, text

    def fail(self, why: str) -> InputError:
        return InputError(f"{self.path} line {self.number}: {why}: {self.text!r}")

    def parse(self, allowed: tuple[str, ...]) -> Piece:
        """Split into parts, checking that no slot is glued to a letter or digit (so
        every slot boundary is a tokenizer boundary) and that no slot is unknown."""
        parts = split_slots(self.text, allowed, self.fail, glued="{_'")
        return Piece(text=self.text, parts=parts)

    def sentence(self) -> None:
        if not self.text.endswith(".") or any(c in self.text[:-1] for c in ".;:!?"):
            raise self.fail("expected one sentence ending with '.'")

    def phrase(self, role: str, past: bool) -> Phrase:
        piece = self.parse((*SENTENCES, *PRONOUN_SLOTS))
        capital = role == "intro"
        if not self.text[0].isalpha() or self.text[0].isupper() != capital:
            raise self.fail(
                f"a {role} phrase starts with a {'capital' if capital else 'lower-case'} letter"
            )
        if any(c in self.text for c in ".;:!?"):
            raise self.fail("a phrase holds no sentence punctuation")
        attributes = [s for s in piece.slots if s in SENTENCES]
        if not attributes or len(set(attributes)) != len(attributes):
            raise self.fail("a phrase holds each of its attribute slots once, and at least one")
        stages = [STAGE[a] for a in attributes]
        last = max(i for i, (kind, p) in enumerate(piece.parts) if p in SENTENCES)
        tail = "".join(p for kind, p in piece.parts[last + 1 :] if kind == "text")
        trailing = "," in tail or " and " in self.text  # another "and" would read badly
        return Phrase(piece, frozenset(attributes), min(stages), max(stages), past, trailing)

    def pattern(self) -> tuple[Piece, tuple[Slot, ...]]:
        piece = self.parse(PATTERN_SLOTS)
        if not re.match(r"(\{intro\}, |\{opener\} )?\{subject\}[ ,]", self.text):
            raise self.fail(
                'a pattern starts "{subject}", "{intro}, {subject}" or "{opener} {subject}"'
            )
        self.sentence()
        names = piece.slots
        if any(names.count(s) > 1 for s in ("subject", "intro", "opener", "closer")):
            raise self.fail("a pattern has {subject}, {intro}, {opener} and {closer} once at most")
        slots = []
        for i, name in enumerate(names):
            after = names[i + 1] if i + 1 < len(names) else None
            if name in ("and", "then") and after not in PHRASE_ROLES:
                raise self.fail(f"{{{name}}} must be followed by a phrase slot")
            if name in PHRASE_ROLES:
                later = i > 0 and names[i - 1] == "then"
                past = name == "vp" and (later or after in ("then", "before"))
                final = self.text.endswith(f"{{{name}}}.") and after is None
                slots.append(Slot(name, later, past, final))
        if not 1 <= len(slots) <= 3 or not any(s.role == "vp" for s in slots):
            raise self.fail("a pattern has one to three phrase slots, at least one {vp}")
        return piece, tuple(slots)

    def plain(self, what: str) -> str:
        if "{" in self.text or "}" in self.text:
            raise self.fail(f"a {what} has no slots")
        if what == "opener" and not (self.text[0].isupper() and self.text.endswith(",")):
            raise self.fail("an opener is capitalized and ends with ','")
        if what == "connective" and not re.fullmatch(r"[a-z]+,?( [a-z]+,?)*", self.text):
            raise self.fail("a connective is lower-case words, maybe with commas")
        return self.text

    def closer(self) -> Piece:
        piece = self.parse(PRONOUN_SLOTS)
        if not self.text[0].islower() or any(c in self.text for c in ".;:!?"):
            raise self.fail("a closer is lower-case words without sentence punctuation")
        return piece

    def filler(self) -> Piece:
        piece = self.parse(("subject", *PRONOUN_SLOTS))
        if not (self.text.startswith("{subject} ") or self.text[0].isupper()):
            raise self.fail("a filler opens with {subject} or a capital letter")
        if "{subject}" in self.text[1:]:
            raise self.fail("{subject} may only open a filler")
        self.sentence()
        return piece

    def title(self) -> tuple[str, str]:
        female, sep, male = self.text.partition("; ")
        if not sep or not all(re.fullmatch(r"[A-Z][a-z]*\.?", t) for t in (female, male)):
            raise self.fail("expected 'Female; Male' titles, such as 'Ms.; Mr.'")
        return female, male


@cache
def load_grammar(folder: Path | str | None = None) -> Grammar:
    """Load and check a bioR grammar folder (default: `bioknow/data/templates/bior/`); a problem is
    an `InputError` naming the file and the line."""
    root = Path(folder) if folder is not None else GRAMMAR_DIR
    if not root.is_dir():
        raise InputError(f"{root}: bioR grammar folder not found")

    def lines(name: str) -> list[_Line]:
        path = root / _FILES[name]
        return [_Line(path, n, t) for n, t in enumerate(_read(path), 1)]

    phrases: dict[str, dict[frozenset[str], tuple[Phrase, ...]]] = {}
    for role in PHRASE_ROLES:
        by_set: dict[frozenset[str], list[Phrase]] = {}
        files = [("vp", True), ("vp_present", False)] if role == "vp" else [(role, True)]
        for name, past in files:
            for line in lines(name):
                p = line.phrase(role, past)
                by_set.setdefault(p.attributes, []).append(p)
        phrases[role] = {k: tuple(v) for k, v in by_set.items()}
    missing = [a for a in SENTENCES if frozenset([a]) not in phrases["vp"]]
    if missing:
        raise InputError(f"{root / _FILES['vp']}: no single-attribute verb phrase for {missing}")
    patterns = [line.pattern() for line in lines("patterns")]
    grammar = Grammar(
        root=root,
        phrases=phrases,
        patterns=tuple(p for p, _ in patterns),
        slots=tuple(s for _, s in patterns),
        words={
            "and": tuple(line.plain("connective") for line in lines("and")),
            "then": tuple(line.plain("connective") for line in lines("then")),
            "opener": tuple(line.plain("opener") for line in lines("opener")),
        },
        closers=tuple(line.closer() for line in lines("closer")),
        fillers=tuple(line.filler() for line in lines("filler")),
        titles=tuple(line.title() for line in lines("titles")),
    )
    for group in {g for grouping in GROUPINGS for g in grouping}:
        for first in (True, False):
            grammar.structures(group, first)  # every sentence of every grouping is writable
    return grammar


def _groupings() -> tuple[tuple[frozenset[str], ...], ...]:
    """The ordered splits of the six attributes into sentences of two or three."""
    found = set()
    for sizes in ((2, 2, 2), (3, 3)):
        for order in itertools.permutations(SENTENCES):
            cuts = np.cumsum((0, *sizes))
            found.add(tuple(frozenset(order[a:b]) for a, b in itertools.pairwise(cuts)))
    return tuple(sorted(found, key=lambda g: [sorted(SENTENCES.index(a) for a in s) for s in g]))


GROUPINGS = _groupings()  # 90 of three sentences, 20 of two


# ---------------------------------------------------------------------------- rendering


class _Draws:
    """Uniform integers keyed by (seed, person, rendering index, draw number), drawn in
    blocks of keyed hashes (the first block may be computed for many people at once)."""

    BLOCK = 64

    def __init__(self, seed: int, person: int, k: int, first: list[int] | None = None):
        self.key = (seed, CHOICE_STREAM, person, k)
        self.block = first if first is not None else self._block(0)
        self.used = 0

    def _block(self, index: int) -> list[int]:
        return keyed.hash64(*self.key, index, np.arange(self.BLOCK, dtype=np.uint64)).tolist()

    def __call__(self, n: int) -> int:
        if self.used and self.used % self.BLOCK == 0:
            self.block = self._block(self.used // self.BLOCK)
        h = self.block[self.used % self.BLOCK]
        self.used += 1
        return ((h >> 11) * n) >> 53  # as keyed.uniform_int: the top 53 bits scaled to [0, n)


class _Writer:
    """Text and spans, built piece by piece."""

    def __init__(self):
        self.pieces: list[str] = []
        self.spans: list[Span] = []
        self.position = 0

    def put(self, text: str, label: str | None = None) -> None:
        if label is not None:
            self.spans.append(Span(label, self.position, self.position + len(text)))
        self.pieces.append(text)
        self.position += len(text)

    def append(self, other: "_Writer") -> None:
        for s in other.spans:
            self.spans.append(Span(s.label, self.position + s.start, self.position + s.end))
        self.put("".join(other.pieces))


class _Renderer:
    """One rendering in the making: its draws, the person's words, the words used."""

    def __init__(self, population: Population, person: int, grammar: Grammar, draw: _Draws):
        self.population, self.person, self.grammar, self.draw = population, person, grammar, draw
        self.subject, self.possessive, self.object = population.pronouns(person)
        self.first, _, self.last = population.name_parts(person)
        gender = int(population.codes["gender"][person])
        self.title = grammar.titles[draw(len(grammar.titles))][gender]
        self.used: set[str] = set()

    def pick(self, options):
        """Draw an option whose content words are all new (or, after ATTEMPTS, the last)."""
        for _ in range(ATTEMPTS):
            choice = options[self.draw(len(options))]
            words = content_words(choice) if isinstance(choice, str) else choice.words
            if not words & self.used:
                break
        self.used.update(words)
        return choice

    def reference(self, w: _Writer, opens: bool) -> None:
        """A later reference to the person: pronoun, first name, or title and last name."""
        r = self.draw(REFERENCE_WEIGHTS)
        if r < PRONOUN_WEIGHT:
            w.put(self.subject if opens else self.subject.lower(), "gender")
        elif r < PRONOUN_WEIGHT + FIRST_NAME_WEIGHT:
            w.put(self.first)
        else:
            w.put(f"{self.title} {self.last}")

    def fill(self, w: _Writer, piece: Piece, sentence: int = -1, slots=(), sets=()) -> None:
        """Write a piece: a phrase or filler (sentence -1), or the pattern of a sentence
        whose phrase `slots` state the attribute sets `sets`, in order."""
        slots, sets = iter(slots), iter(sets)
        opens = w.position
        for kind, text in piece.parts:
            if kind == "text":
                w.put(text)
            elif text in SENTENCES:
                w.put(self.population.value(text, self.person), text)
            elif text == "pronoun":
                w.put(self.subject.lower(), "gender")
            elif text == "possessive":
                w.put(self.possessive, "gender")
            elif text == "object":
                w.put(self.object, "gender")
            elif text == "subject" and sentence == 0:
                w.put(self.population.full_name(self.person), "name")
            elif text == "subject":
                self.reference(w, w.position == opens)
            elif text in PHRASE_ROLES:
                self.fill(w, self.pick(self.grammar.options(next(slots), next(sets))).piece)
            elif text == "closer":
                self.fill(w, self.pick(self.grammar.closers))
            else:  # a connective or an opener
                w.put(self.pick(self.grammar.words[text]))

    def sentence(self, number: int, group: frozenset[str]) -> _Writer:
        """Sentence `number` (0: the opening one), stating exactly the attributes of `group`."""
        structures = self.grammar.structures(group, first=number == 0)
        index, ways = structures[self.draw(len(structures))]
        w = _Writer()
        pattern, slots = self.grammar.patterns[index], self.grammar.slots[index]
        self.fill(w, pattern, number, slots, ways[self.draw(len(ways))])
        return w

    def rendering(self, groups: tuple[frozenset[str], ...]) -> Rendering:
        parts = [self.sentence(number, group) for number, group in enumerate(groups)]
        count = FILLER_COUNTS[self.draw(len(FILLER_COUNTS))]
        for i in _distinct(self.draw, len(self.grammar.fillers), count):
            w = _Writer()
            self.fill(w, self.grammar.fillers[i])
            parts.insert(1 + self.draw(len(parts)), w)  # never before the opening sentence
        out = _Writer()
        for i, part in enumerate(parts):
            if i:
                out.put(" ")
            out.append(part)
        return Rendering(person=self.person, text="".join(out.pieces), spans=tuple(out.spans))


def _distinct(draw: _Draws, n: int, count: int) -> list[int]:
    """`count` distinct integers of [0, n), drawn in order."""
    chosen: list[int] = []
    for _ in range(min(count, n)):
        j = draw(n - len(chosen))
        for c in sorted(chosen):
            j += j >= c
        chosen.append(j)
    return chosen


def groupings(population: Population, people, ks) -> np.ndarray:
    """The index in `GROUPINGS` of each person's k-th rendering: the k-th element of the
    person's keyed shuffle of the groupings, so a person's renderings differ."""
    people = np.asarray(people, dtype=np.int64).reshape(-1, 1)
    ks = np.asarray(ks, dtype=np.int64).reshape(-1)
    if ks.size and (ks.min() < 0 or ks.max() >= RENDERINGS):
        raise InputError(f"rendering index must be in [0, {RENDERINGS}), got {ks.tolist()}")
    every = np.arange(len(GROUPINGS), dtype=np.uint64)
    order = np.argsort(keyed.hash64(population.seed, PLAN_STREAM, people, every), axis=1)
    return order[np.arange(len(people)), ks]


def render_people(
    population: Population, people, k=0, grammar: Grammar | None = None
) -> list[Rendering]:
    """The k-th rendering of each person (k an int, or one per person): list[Rendering]."""
    grammar = grammar or load_grammar()
    people = np.asarray(people, dtype=np.int64).reshape(-1)
    ks = np.broadcast_to(np.asarray(k, dtype=np.int64), people.shape)
    out = []
    for a in range(0, len(people), CHUNK):
        p, j = people[a : a + CHUNK], ks[a : a + CHUNK]
        plans = groupings(population, p, j)
        counters = np.arange(_Draws.BLOCK, dtype=np.uint64)
        key = (population.seed, CHOICE_STREAM, p[:, None], j[:, None], 0, counters)
        blocks = keyed.hash64(*key).tolist()
        for person, kk, plan, block in zip(
            p.tolist(), j.tolist(), plans.tolist(), blocks, strict=True
        ):
            draw = _Draws(population.seed, person, kk, block)
            r = _Renderer(population, person, grammar, draw)
            out.append(r.rendering(GROUPINGS[plan]))
    return out


def render(
    population: Population, person: int, k: int, grammar: Grammar | None = None
) -> Rendering:
    """The k-th of the person's `RENDERINGS` fixed bioR renderings (0 <= k < 40)."""
    return render_people(population, [person], k, grammar)[0]


# ---------------------------------------------------------------------------- diversity


def skeleton(rendering: Rendering, grammar: Grammar | None = None) -> str:
    """The text with every span replaced by "<label>" and every later reference to the
    person by name (first name, or title and last name) by "<name>"."""
    grammar = grammar or load_grammar()
    text, position, pieces, name = rendering.text, 0, [], ""
    for span in sorted(rendering.spans, key=lambda s: s.start):
        pieces += [text[position : span.start], f"<{span.label}>"]
        position = span.end
        if span.label == "name":
            name = text[span.start : span.end]
    out = "".join(pieces) + text[position:]
    if name:
        first, last = name.split()[0], name.split()[-1]
        titles = "|".join(sorted({re.escape(t) for pair in grammar.titles for t in pair}))
        out = re.sub(rf"(?<![\w<])(?:{titles}) {re.escape(last)}(?!\w)", "<name>", out)
        out = re.sub(rf"(?<![\w<]){re.escape(first)}(?!\w)", "<name>", out)
    return out


def split_sentences(text: str) -> list[str]:
    """The sentences of a skeleton (whose spans and names are placeholders by then)."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def diversity(renderings) -> dict:
    """How varied renderings are: distinct texts, skeletons and sentence skeletons, and
    sentences and words per rendering."""
    renderings = list(renderings)
    grammar = load_grammar()
    skeletons = [skeleton(r, grammar) for r in renderings]
    split = [split_sentences(s) for s in skeletons]
    words = [len(r.text.split()) for r in renderings]
    n = max(len(renderings), 1)
    return {
        "renderings": len(renderings),
        "distinct_texts": len({r.text for r in renderings}),
        "distinct_skeletons": len(set(skeletons)),
        "sentences": sum(len(s) for s in split),
        "distinct_sentence_skeletons": len({s for ss in split for s in ss}),
        "mean_sentences": sum(len(s) for s in split) / n,
        "mean_words": sum(words) / n,
        "min_words": min(words, default=0),
        "max_words": max(words, default=0),
    }


# ---------------------------------------------------------------------------- rewriter

INSTRUCTION = (
    "Rewrite the facts below as a short biography in fluent English prose. Begin with "
    "the full name and state every fact exactly as written."
)
FACT_NAMES = {
    "birth_date": "Born",
    "birth_city": "Birthplace",
    "university": "University",
    "major": "Major",
    "employer": "Employer",
    "work_city": "Work city",
}
_PRONOUN = re.compile(
    r"(?<![A-Za-z0-9])(he|she|his|her|him|hers|himself|herself)(?![A-Za-z0-9])", re.I
)
_OTHER_GENDER = ({"he", "his", "him", "himself"}, {"she", "her", "hers", "herself"})


def prompt(population: Population, person: int) -> str:
    """The model's prompt: the instruction and the person's facts."""
    gender = GENDERS[int(population.codes["gender"][person])]
    facts = [f"Name: {population.full_name(person)}", f"Gender: {gender}"]
    facts += [f"{FACT_NAMES[a]}: {population.value(a, person)}" for a in SENTENCES]
    return f"{INSTRUCTION}\n{'; '.join(facts)}\nBiography:"


def spans_of(population: Population, person: int, text: str) -> Rendering | None:
    """A model's biography with its spans, or None if it does not open with the full
    name, does not state some value verbatim exactly once (at token boundaries: after a
    space, before a non-alphanumeric), or uses a pronoun of the other gender."""
    name = population.full_name(person)
    if not text.startswith(name) or text[len(name) : len(name) + 1].isalnum():
        return None
    spans = [Span("name", 0, len(name))]
    for attribute in SENTENCES:
        value = population.value(attribute, person)
        start = text.find(value)
        if start < 0 or text.find(value, start + 1) >= 0:
            return None
        end = start + len(value)
        if start == 0 or text[start - 1] != " " or text[end : end + 1].isalnum():
            return None
        spans.append(Span(attribute, start, end))
    ranges = sorted((s.start, s.end) for s in spans)
    if any(b[0] < a[1] for a, b in itertools.pairwise(ranges)):
        return None
    g = int(population.codes["gender"][person])
    own = {SUBJECT[g].lower(), POSSESSIVE[g], OBJECT[g]}
    for m in _PRONOUN.finditer(text):
        word = m.group(1).lower()
        if any(a <= m.start() < b for a, b in ranges):
            continue  # part of a name or a value
        if word in _OTHER_GENDER[g] and word not in own:
            return None
        if word in own and (m.start() == 0 or text[m.start() - 1] == " "):
            spans.append(Span("gender", m.start(), m.end()))
    spans.sort(key=lambda s: s.start)
    return Rendering(person=int(person), text=text, spans=tuple(spans))


def _load_model(model_path, device: str):
    path = Path(model_path)
    if not path.is_dir():
        raise InputError(f"{model_path}: model folder not found")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        device = torch.device(device)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    except Exception as e:  # transformers raises many kinds for a bad folder
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"cannot load model {model_path!s}: {first}") from None
    return tokenizer, model.to(device).eval(), device


def rewrite(
    population: Population,
    people,
    model_path,
    retries: int = 2,
    seed: int = 0,
    max_new_tokens: int = 200,
    device: str = "cpu",
    k: int = 0,
) -> tuple[list[Rendering], dict]:
    """Let a local causal LM write each person's biography from the facts: sample
    (seeded by seed + person), keep the output if `spans_of` accepts it (its first
    line, stripped), else sample again up to `retries` times, else fall back to the
    grammar's rendering k. Returns the renderings and counts {"kept": first try
    accepted, "retried": a retry accepted, "replaced": fell back to the grammar}."""
    import torch

    if retries < 0 or max_new_tokens < 1:
        raise InputError(
            f"retries must be >= 0 and max_new_tokens >= 1, got {retries}, {max_new_tokens}"
        )
    tokenizer, model, device = _load_model(model_path, device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    devices = [device.index or 0] if device.type == "cuda" else []
    counts = {"kept": 0, "retried": 0, "replaced": 0}
    out = []
    for person in np.asarray(people, dtype=np.int64).reshape(-1).tolist():
        encoded = tokenizer(prompt(population, person), return_tensors="pt")
        inputs = {k: encoded[k].to(device) for k in ("input_ids", "attention_mask") if k in encoded}
        found = None
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(seed + person)
            for attempt in range(retries + 1):
                ids = model.generate(
                    **inputs, do_sample=True, max_new_tokens=max_new_tokens, pad_token_id=pad
                )
                new = ids[0, inputs["input_ids"].shape[1] :]
                text = tokenizer.decode(new, skip_special_tokens=True).strip()
                found = spans_of(population, person, text.split("\n")[0].strip())
                if found is not None:
                    counts["retried" if attempt else "kept"] += 1
                    break
        if found is None:
            counts["replaced"] += 1
            found = render(population, person, k)
        out.append(found)
    return out, counts
