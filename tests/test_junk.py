"""Junk mixtures: windows all useful or all junk, the junk share F, exposures of useful
data only, a junk population computed per person in constant memory, a useful prefix."""

import json
import tracemalloc

import numpy as np
import pytest

from bioknow import dataset, train
from bioknow.errors import InputError
from bioknow.stream import JunkSource, MixedStream, TrainStream


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    path = tmp_path_factory.mktemp("junk") / "data"
    dataset.generate("bioS", 120, 2, path, sample=0)
    return dataset.open_dataset(path)


def mixture(ds, fraction, n2=10**8, batch=8):
    useful = TrainStream(ds.table, 6, batch, 0, ds.online)
    return useful, MixedStream(useful, JunkSource(ds.fields, ds.tokenizer, 99, n2), fraction)


@pytest.mark.parametrize("fraction", [0.875, 0.5, 0.3])
def test_windows_are_all_useful_or_all_junk(ds, fraction):
    useful, mixed = mixture(ds, fraction)
    batches = list(mixed.batches())
    assert len(batches) == mixed.steps
    rows = np.concatenate([b.junk for b in batches])
    lengths = np.concatenate([b.lengths for b in batches])
    real = lengths > 0
    assert abs(rows[real].mean() - fraction) < 0.01
    # the useful rows, in order, are exactly the useful stream: no junk inside them
    kept = np.concatenate([b.tokens[~b.junk].ravel()[: b.lengths[~b.junk].sum()] for b in batches])
    alone = np.concatenate([b.tokens.ravel()[: b.valid] for b in useful.batches()])
    assert np.array_equal(kept, alone)
    assert sum(int(b.lengths[~b.junk].sum()) for b in batches) == useful.total_tokens
    # the junk rows are the junk source's windows 0, 1, 2, ...
    junk = np.concatenate([b.tokens[b.junk] for b in batches])
    assert np.array_equal(junk, mixed.junk.windows(np.arange(len(junk)))[0])


def test_resume_in_a_mixture(ds):
    _, mixed = mixture(ds, 0.6, batch=4)
    whole = list(mixed.batches())
    k = len(whole) // 2
    for again in (list(mixed.batches(k)), list(mixed.batches(k, start=whole[k - 1].end))):
        for a, b in zip(whole[k:], again, strict=True):
            assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.junk, b.junk)


def test_junk_population_in_constant_memory(ds):
    for n2 in (10**8, 1000):
        source = JunkSource(ds.fields, ds.tokenizer, 5, n2)
        source.windows(np.arange(2))  # warm up
        tracemalloc.start()
        tokens, _ = source.windows(np.arange(64))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 30e6, (n2, peak)
        assert tokens.shape == (64, 512) and ((tokens != ds.table.eot).sum(1) > 480).all()


def test_repetitive_junk_repeats_people(ds):
    def names(n2):
        tokens, labels = JunkSource(ds.fields, ds.tokenizer, 5, n2).windows(np.arange(40))
        starts = np.flatnonzero(tokens.ravel() == ds.table.eot)
        flat, lab = tokens.ravel(), labels.ravel()
        return [tuple(flat[s + 1 : s + 12][lab[s + 1 : s + 12] == 1]) for s in starts[:-1]]

    few, many = names(1000), names(10**8)
    assert len(set(few)) < 0.9 * len(few)  # 1000 people: repeats within ~280 units
    assert len(set(many)) == len(many)


def test_training_with_junk_and_a_prefix(ds, tmp_path):
    state = train.train(
        str(ds.path),
        "gpt2-1-1",
        2,
        tmp_path / "r",
        batch=4,
        device="cpu",
        junk_fraction=0.5,
        junk_n=10**8,
        useful_prefix="<|useful|>",
    )
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    stream = train.training_stream(config, ds)
    assert state["tokens"] == config["tokens"] == stream.useful.total_tokens
    assert state["junk_tokens"] > 0.8 * state["tokens"]
    table = stream.table
    prefix = table.tokenizer.token_to_id("<|useful|>")
    units = table.assemble(np.arange(5), 0)
    assert all(units.unit(i)[0][:2].tolist() == [table.eot, prefix] for i in range(5))
    assert config["model"]["vocab_size"] % 64 == 0
    assert config["model"]["vocab_size"] >= table.tokenizer.get_vocab_size()
    from bioknow import evaluate

    report = evaluate.evaluate_run(tmp_path / "r", device="cpu")
    assert np.isfinite(report["bits"])


def test_bad_junk_options(ds, tmp_path):
    for kwargs in (
        {"junk_fraction": 1.0, "junk_n": 10},
        {"junk_fraction": 0.5},
        {"useful_prefix": "<|endoftext|>"},
    ):
        with pytest.raises(InputError):
            train.train(str(ds.path), "gpt2-1-1", 1, tmp_path / "x", device="cpu", **kwargs)
    assert not (tmp_path / "x").exists()
