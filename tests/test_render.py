import re

import numpy as np
import pytest

from bioknow.data.fields import GENDERS, OBJECT, POSSESSIVE, SENTENCES, SUBJECT
from bioknow.data.population import Population
from bioknow.data.render import render_people


@pytest.fixture(scope="module")
def population(default_fields):
    return Population.build(default_fields, 1, 3000)


def test_every_span_holds_exactly_its_value(population):
    for exposure in (0, 1, 2):
        for r in render_people(population, np.arange(3000), exposure):
            labels = [s.label for s in r.spans]
            assert sorted(set(labels)) == sorted(["name", "gender", *SENTENCES])
            assert labels.count("name") == 1
            for s in r.spans:
                held = r.text[s.start : s.end]
                if s.label == "name":
                    assert held == population.full_name(r.person)
                elif s.label == "gender":
                    g = population.codes["gender"][r.person]
                    assert held in (SUBJECT[g], POSSESSIVE[g], OBJECT[g])
                else:
                    assert held == population.value(s.label, r.person)
                # a slot is never glued to letters or digits (tokenizer boundaries)
                assert s.start == 0 or not r.text[s.start - 1].isalnum()
                assert s.end == len(r.text) or not r.text[s.end].isalnum()


def test_full_name_opens_and_pronouns_match_gender(population):
    for r in render_people(population, np.arange(3000)):
        name = population.full_name(r.person)
        assert r.text.startswith(name + " ")
        assert r.text.count(name) == 1
        masked = r.text  # values replaced by X, so that "St. Paul" cannot split a sentence
        for s in sorted(r.spans, key=lambda s: -s.start):
            if s.label not in ("name", "gender"):
                masked = masked[: s.start] + "X" + masked[s.end :]
        sentences = masked.split(". ")
        assert len(sentences) == 6
        g = population.codes["gender"][r.person]
        assert all(s.split(" ", 1)[0] == SUBJECT[g] for s in sentences[1:])
        words = set(re.findall(r"[A-Za-z]+", masked))
        wrong = {"He", "his", "him"} if GENDERS[g] == "female" else {"She", "her"}
        assert not words & wrong, r.text


def test_work_city_is_the_employers_headquarters(population, default_fields):
    for i in range(100):
        employer = population.codes["employer"][i]
        assert population.value("work_city", i) == default_fields.employer_cities[employer]


def test_bioS_changes_at_every_exposure_and_simple_is_fixed(population):
    people = np.arange(500)
    first = [r.text for r in render_people(population, people, 0)]
    again = [r.text for r in render_people(population, people, 0)]
    later = [r.text for r in render_people(population, people, 1)]
    assert first == again
    assert sum(a != b for a, b in zip(first, later, strict=True)) > 495
    orders = {
        tuple(r.text.split(". ")[0][:20] for r in render_people(population, [0], e))
        for e in range(50)
    }
    assert len(orders) > 10
