"""The measurement: an oracle scores R = Rmax, a uniform scorer about 0 bits, and a
scorer that is off by one position is caught."""

import math
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

from bioknow.data import dataset
from bioknow.data.fields import KNOWLEDGE
from bioknow.data.render.tokens import LABEL
from bioknow.data.stream import EVAL_EXPOSURE
from bioknow.measure import evaluate

N = 300
PARAMS = {"P": 50_000, "total": 60_000, "non_embedding": 40_000}


BIOD = {"k": 3, "c": 2, "d": 20, "l": 2, "t": 50}


@pytest.fixture(scope="module", params=["bioS", "bioS-simple", "bioR-style", "bioD"])
def ds(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / request.param
    extra = {"biod": BIOD} if request.param == "bioD" else {}
    dataset.generate(request.param, N, 8, path, sample=0, **extra)
    return dataset.open_dataset(path)


def units_of(ds):
    exposure = EVAL_EXPOSURE if ds.online else 0
    units = ds.table.assemble(np.arange(N), exposure)
    return [units.unit(i) for i in range(N)]


def oracle(ds, shift=0):
    """Knows every biography: uniform over the N names while the name is being read (so
    the name costs ln N), then certain of every following token. `shift` moves its
    predictions `shift` positions late."""
    units = units_of(ds)
    names = [tuple(ids[labels == LABEL["name"]]) for ids, labels in units]
    assert not any(a != b and b[: len(a)] == a for a in names for b in names)  # no prefixes
    following = defaultdict(Counter)
    for name in names:
        for k in range(len(name)):
            following[name[:k]][name[k]] += 1
    person_of = {name: i for i, name in enumerate(names)}
    vocab = ds.tokenizer.get_vocab_size()

    def scorer(x: torch.Tensor) -> torch.Tensor:
        logits = torch.full((*x.shape, vocab), -1e9)
        for row, ids in enumerate(x.tolist()):
            name = ()
            for t in range(len(ids) - 1):
                if name in person_of:  # the name is complete: certain of the rest
                    unit = units[person_of[name]][0]
                    nxt = unit[t + 1] if t + 1 < len(unit) else ds.table.eot
                    logits[row, t, nxt] = 0.0
                else:
                    counts = following[name]
                    total = sum(counts.values())
                    for token, c in counts.items():
                        logits[row, t, token] = math.log(c / total)
                    name = (*name, ids[t + 1])
        return torch.roll(logits, shift, dims=1) if shift else logits

    return scorer


def test_oracle_reaches_rmax(ds):
    report = evaluate.evaluate(oracle(ds), ds, PARAMS, batch=64)
    assert report["p1"] == pytest.approx(math.log(N), abs=1e-6)
    assert report["p2"] == pytest.approx(0.0, abs=1e-6)
    assert report["R"] == pytest.approx(report["R_max"], rel=1e-6)
    assert report["R_clamped"] == pytest.approx(report["R_max"], rel=1e-6)
    assert all(a["accuracy"] == 1.0 for a in report["attributes"].values())
    if ds.manifest["variant"] == "bioD":
        assert report["p3"] == pytest.approx(0.0, abs=1e-6)
        assert report["bits_diversity"] == pytest.approx(ds.manifest["knowledge_bits"]["diversity"])
        return
    bits = sum(report["attributes"][a]["bits"] for a in KNOWLEDGE)
    assert bits == pytest.approx(report["bits_value"], rel=1e-9)


def test_uniform_scorer_stores_nothing(ds):
    if ds.manifest["variant"] == "bioD":
        pytest.skip("the value-token count below is bioS's")
    vocab = ds.tokenizer.get_vocab_size()
    report = evaluate.evaluate(lambda x: torch.zeros(*x.shape, vocab), ds, PARAMS)
    units = units_of(ds)
    name_tokens = np.mean([(labels == LABEL["name"]).sum() for _, labels in units])
    value_tokens = np.mean(
        [
            (labels == LABEL["gender"]).any()
            + np.isin(labels, [LABEL[a] for a in KNOWLEDGE[1:]]).sum()
            for _, labels in units
        ]
    )
    assert report["p1"] == pytest.approx(name_tokens * math.log(vocab), rel=1e-6)
    assert report["p2"] == pytest.approx(value_tokens * math.log(vocab), rel=1e-6)
    expected = N * (math.log2(ds.fields.n0) - name_tokens * math.log2(vocab)) + N * (
        ds.fields.log2_s0 - value_tokens * math.log2(vocab)
    )
    assert report["bits"] == pytest.approx(expected, rel=1e-6) and report["bits"] < 0
    assert report["bits_clamped"] == 0.0 and report["R_clamped"] == 0.0


def test_an_off_by_one_scorer_is_caught(ds):
    aligned = evaluate.evaluate(oracle(ds), ds, PARAMS)
    late = evaluate.evaluate(oracle(ds, shift=1), ds, PARAMS)
    early = evaluate.evaluate(oracle(ds, shift=-1), ds, PARAMS)
    assert aligned["R"] == pytest.approx(aligned["R_max"], rel=1e-6)
    for wrong in (late, early):
        assert wrong["bits"] < 0 < aligned["bits"]
        accuracy = wrong["attributes"].get("birth_date", wrong["attributes"].get("values"))
        assert accuracy["accuracy"] < 0.05


def test_sampled_people_give_an_interval(ds):
    vocab = ds.tokenizer.get_vocab_size()
    rng = torch.Generator().manual_seed(0)

    def noisy(x):
        return torch.randn(*x.shape, vocab, generator=rng)

    report = evaluate.evaluate(noisy, ds, PARAMS, people=100, seed=3)
    assert report["people"] == 100 and report["N"] == N
    low, high = report["R_ci95"]
    assert low < report["R"] < high
