"""bioS biographies: six sentences, one per attribute, with exact character spans.

A rendering choice is a sentence order (one of 6! = 720) and a template per sentence,
drawn by counter-based randomness keyed by (seed, person, exposure) (docs/design.md §2.3,
2.4). bioS draws a fresh choice at every exposure; bioS-simple always uses exposure 0.
The full name opens the first sentence; every other subject is a pronoun ("{subject}'s"
is the name and "'s" in the first sentence, "Her" or "His" in the others).
"""

import itertools
from dataclasses import dataclass

import numpy as np

from bioknow.data import keyed
from bioknow.data.fields import SENTENCES, SUBJECT_S
from bioknow.data.population import Population

ORDERS = np.array(list(itertools.permutations(range(len(SENTENCES)))), dtype=np.int8)
CHOICE_STREAM = 20


@dataclass(frozen=True)
class Span:
    """Characters [start, end) of the text hold a label's value: "name" (the opening
    full name), "gender" (a pronoun) or an attribute of `SENTENCES`."""

    label: str
    start: int
    end: int


@dataclass(frozen=True)
class Rendering:
    person: int
    text: str
    spans: tuple[Span, ...]


def choices(population: Population, people: np.ndarray, exposure) -> tuple[np.ndarray, np.ndarray]:
    """Sentence orders [n, 6] (sentence indices by position) and template ids [n, 6]
    (by sentence) of the given people at the given exposure(s)."""
    sizes = [len(ORDERS)] + [len(population.fields.templates[s]) for s in SENTENCES]
    draws = keyed.uniform_ints(sizes, population.seed, CHOICE_STREAM, people, exposure)
    return ORDERS[draws[..., 0]], draws[..., 1:]


def render(population: Population, person: int, order, template_ids) -> Rendering:
    """The biography of one person for one rendering choice."""
    subject, possessive, obj = population.pronouns(person)
    slot_text = {"possessive": possessive, "object": obj}
    pieces: list[str] = []
    spans: list[Span] = []
    position = 0

    def put(text: str, label: str | None = None) -> None:
        nonlocal position
        if label is not None:
            spans.append(Span(label, position, position + len(text)))
        pieces.append(text)
        position += len(text)

    for k, s in enumerate(order):
        sentence = SENTENCES[s]
        if k:
            put(" ")
        for kind, text in population.fields.templates[sentence][template_ids[s]].parts:
            if kind == "text":
                put(text)
            elif text == "subject":
                put(population.full_name(person), "name") if k == 0 else put(subject, "gender")
            elif text == SUBJECT_S:  # "Anna Lee Smith's" opening the biography, else "Her"
                if k == 0:
                    put(population.full_name(person), "name")
                    put("'s")
                else:
                    put(possessive.capitalize(), "gender")
            elif text == "value":
                put(population.value(sentence, person), sentence)
            else:
                put(slot_text[text], "gender")
    return Rendering(person=int(person), text="".join(pieces), spans=tuple(spans))


def render_people(population: Population, people, exposure=0) -> list[Rendering]:
    """Render many people at one exposure (or one exposure each)."""
    people = np.asarray(people, dtype=np.int64)
    orders, ids = choices(population, people, exposure)
    return [
        render(population, p, o.tolist(), t.tolist())
        for p, o, t in zip(people, orders, ids, strict=True)
    ]
