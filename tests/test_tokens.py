"""The fragment assembly invariant: assembled ids == tokenizer(text), labels == spans."""

import numpy as np
import pytest

from bioknow.data import tokenizer
from bioknow.data.population import Population
from bioknow.data.render import render_people
from bioknow.data.render.tokens import LABELS, FragmentTable

N = 10_000


@pytest.fixture(scope="module")
def population(default_fields):
    return Population.build(default_fields, 9, N)


@pytest.fixture(scope="module", params=["default", "small-vocab"])
def table(request, population, default_fields):
    vocab = tokenizer.DEFAULT_VOCAB if request.param == "default" else 700
    return FragmentTable(population, tokenizer.train(default_fields, vocab_size=vocab))


@pytest.mark.parametrize("variant, exposure", [("bioS-simple", 0), ("bioS", 17)])
def test_assembled_ids_and_labels_match_text(table, population, variant, exposure):
    people = np.arange(N)
    units = table.assemble(people, exposure)
    renderings = render_people(population, people, exposure)
    encodings = table.tokenizer.encode_batch([r.text for r in renderings], add_special_tokens=False)
    for i, (r, enc) in enumerate(zip(renderings, encodings, strict=True)):
        ids, labels = units.unit(i)
        assert ids[0] == table.eot and labels[0] == LABELS.index("other")
        assert ids[1:].tolist() == enc.ids
        # every token's label is the label of the span its characters fall in
        expected = []
        for start, end in enc.offsets:
            start += r.text[start] == " "
            inside = [s.label for s in r.spans if s.start <= start and end <= s.end]
            expected.append(LABELS.index(inside[0]) if inside else 0)
        assert labels[1:].tolist() == expected


def test_lengths_without_assembling(table):
    people = np.arange(3000)
    for exposure in (0, 5):
        units = table.assemble(people, exposure)
        assert np.array_equal(table.lengths(people, exposure), np.diff(units.offsets))


def test_expected_lengths_are_the_mean_over_renderings(table):
    people = np.arange(200)
    empirical = np.mean([table.lengths(people, e) for e in range(2000)], axis=0)
    expected = table.expected_lengths(people)
    assert abs(expected.mean() - empirical.mean()) < 0.05
    assert np.abs(expected - empirical).max() < 1.0


def test_used_ids(table):
    people = np.arange(N)
    stored = np.unique(table.assemble(people, 0).tokens)
    assert np.array_equal(table.used_ids(online=False), stored)
    online = set(table.used_ids(online=True).tolist())
    seen = set()
    for e in range(20):
        seen |= set(np.unique(table.assemble(people[:2000], e).tokens).tolist())
    assert seen <= online and set(stored.tolist()) <= online


def test_a_tokenizer_that_breaks_boundaries_is_detected(population, default_fields):
    broken = tokenizer.train(default_fields)
    broken.pre_tokenizer = tokenizer.pre_tokenizers.ByteLevel(add_prefix_space=True)
    table = FragmentTable(population, broken)
    assert table.mismatches(np.arange(50), 0)
