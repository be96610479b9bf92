"""Junk mixtures: windows all useful or all junk, the junk share F, exposures of useful
data only, a junk population computed per person in constant memory, junk of the
dataset's format (bioD for bioD), a useful prefix for every variant."""

import json
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from bioknow.base.errors import InputError
from bioknow.data import dataset
from bioknow.data.render.tokens import LABEL, FragmentTable, Prefixed
from bioknow.data.stream import EVAL_EXPOSURE, JunkSource, MixedStream, TrainStream
from bioknow.data.tokenizer import with_special
from bioknow.measure import evaluate
from bioknow.training import train

BIOD = {"k": 2, "c": 3, "d": 10, "l": 1, "t": 20}
PREFIX = "<|useful|>"


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    path = tmp_path_factory.mktemp("junk") / "data"
    dataset.generate("bioS", 120, 2, path, sample=0)
    return dataset.open_dataset(path)


def mixture(ds, fraction, n2=10**8, batch=8):
    useful = TrainStream(ds.table, 6, batch, 0, ds.online)
    return useful, MixedStream(useful, JunkSource(ds.junk_table(ds.tokenizer, 99, n2)), fraction)


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
        source = JunkSource(ds.junk_table(ds.tokenizer, 5, n2))
        source.windows(np.arange(2))  # warm up
        tracemalloc.start()
        tokens, _ = source.windows(np.arange(64))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 30e6, (n2, peak)
        assert tokens.shape == (64, 512) and ((tokens != ds.table.eot).sum(1) > 480).all()


def test_repetitive_junk_repeats_people(ds):
    def names(n2):
        tokens, labels = JunkSource(ds.junk_table(ds.tokenizer, 5, n2)).windows(np.arange(40))
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
    from bioknow.measure import evaluate

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


@pytest.fixture(scope="module")
def variants(ds, tmp_path_factory):
    """A bioS, a bioD and a bioR-style dataset."""
    root = tmp_path_factory.mktemp("variants")
    dataset.generate("bioD", 30, 3, root / "bioD", sample=0, biod=BIOD, vocab_size=320)
    dataset.generate("bioR-style", 30, 4, root / "bioR", sample=0, renderings=3, vocab_size=320)
    opened = [dataset.open_dataset(root / name) for name in ("bioD", "bioR")]
    return {d.manifest["variant"]: d for d in (ds, *opened)}


def run_stream(ds, prefix=None, junk=None):
    config = {"exposures": 3, "batch": 2, "seed": 0, "useful_prefix": prefix, "junk": junk}
    return train.training_stream(config, ds)


def stream_tokens(stream):
    batches = list(stream.batches())
    tokens = np.concatenate([b.tokens.ravel()[: b.valid] for b in batches])
    return tokens, np.concatenate([b.labels.ravel()[: b.valid] for b in batches])


def decode(tokenizer, ids) -> str:
    return tokenizer.decode(list(map(int, ids)), skip_special_tokens=False)


@pytest.mark.parametrize("variant", ["bioS", "bioD", "bioR-style"])
def test_a_prefix_follows_every_end_of_text_of_every_variant(variants, variant):
    ds = variants[variant]
    plain, prefixed = run_stream(ds), run_stream(ds, PREFIX)
    assert prefixed.total_tokens == plain.total_tokens + 3 * ds.manifest["n"]
    (tokens, labels), (got, got_labels) = stream_tokens(plain), stream_tokens(prefixed)
    prefix = prefixed.table.tokenizer.token_to_id(PREFIX)
    after = np.flatnonzero(tokens == ds.table.eot) + 1  # every unit opens with end-of-text
    assert len(after) == 3 * ds.manifest["n"]
    assert np.array_equal(got, np.insert(tokens, after, prefix))
    assert np.array_equal(got_labels, np.insert(labels, after, LABEL["other"]))
    one, other = plain.table.assemble([0, 1], 5), prefixed.table.assemble([0, 1], 5)
    for i in range(2):
        text = decode(ds.tokenizer, one.unit(i)[0][1:])
        assert decode(prefixed.table.tokenizer, other.unit(i)[0]) == f"<|endoftext|>{PREFIX}{text}"
    if variant == "bioD":
        assert text == ds.table.render([1], 5)[0].text


BIOD_UNIT = re.compile(
    r"[A-Z][^<>.,]+'s ID [12] is <\|t\d+\|>(, <\|t\d+\|>){2}"
    r"\. (Her|His) ID [12] is <\|t\d+\|>(, <\|t\d+\|>){2}\."
)


def test_biod_junk_is_biod_paragraphs_of_other_people(variants):
    ds = variants["bioD"]
    junk = {"fraction": 0.5, "n": 10**8, "seed": ds.manifest["seed"] + 1}
    source = run_stream(ds, PREFIX, junk).junk
    tokens, labels = source.windows(np.arange(6))
    units = [u for row in tokens for u in decode(ds.tokenizer, row).split("<|endoftext|>")[1:-1]]
    assert len(units) > 20 and all(BIOD_UNIT.fullmatch(u) for u in units), units[:2]
    assert (labels == LABEL["chunk_first"]).sum() >= 2 * len(units)
    assert not (labels == LABEL["birth_date"]).any()
    assert not np.array_equal(source.table.sets, ds.table.sets)  # keyed by the junk seed
    # bioR-style (and bioS) junk is bioS biographies
    ds = variants["bioR-style"]
    source = run_stream(ds, None, {**junk, "seed": 9}).junk
    assert isinstance(source.table, FragmentTable)
    assert (source.windows(np.arange(2))[1] == LABEL["birth_date"]).any()


def test_biod_junk_in_constant_memory(variants):
    ds = variants["bioD"]
    source = JunkSource(ds.junk_table(ds.tokenizer, 5, 10**8))
    source.windows(np.arange(2))  # warm up
    tracemalloc.start()
    tokens, _ = source.windows(np.arange(64))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 30e6 and ((tokens != ds.table.eot).sum(1) > 480).all()


def test_eval_of_a_biod_run_with_a_prefix_and_junk(variants, tmp_path):
    """The report's p1, p2, p3 equal the model's losses on the texts, recomputed from the
    tokenizer's own encoding of end-of-text, the prefix and each paragraph."""
    ds = variants["bioD"]
    options = dict(batch=2, device="cpu", junk_fraction=0.5, junk_n=10**8, useful_prefix=PREFIX)
    train.train(str(ds.path), "gpt2-1-1", 3, tmp_path / "r", **options)
    report = evaluate.evaluate_run(tmp_path / "r", device="cpu")
    _, model, _ = train.load_run(tmp_path / "r")
    tokenizer = with_special(ds.tokenizer, [PREFIX])
    symbols, comma = set(ds.table.symbol_ids.tolist()), tokenizer.token_to_id(",")
    opening = f"<|endoftext|>{PREFIX}"
    sums = []
    for paragraph in ds.table.render(np.arange(ds.manifest["n"]), EVAL_EXPOSURE):
        encoding = tokenizer.encode(opening + paragraph.text, add_special_tokens=False)
        ids = encoding.ids
        with torch.no_grad():
            logits = model(torch.tensor([ids]))[0][0, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")
        name = paragraph.spans[0]
        starts = [a - len(opening) for a, _ in encoding.offsets[1:]]
        in_name = [name.start <= a < name.end for a in starts]
        value = [t in symbols for t in ids[1:]]
        first = [v and before != comma for v, before in zip(value, ids, strict=False)]
        sums.append([float(nll[np.array(mask)].sum()) for mask in (in_name, value, first)])
    p1, p2, p3 = np.mean(sums, axis=0) / [1, BIOD["k"], BIOD["k"]]
    assert report["people"] == ds.manifest["n"]
    assert (report["p1"], report["p2"], report["p3"]) == pytest.approx((p1, p2, p3), rel=1e-4)


def test_a_run_started_on_another_stream_is_not_resumed(variants, tmp_path, monkeypatch):
    """A bioD run begun on bioS units behind its prefix (as bioknow made them before the
    prefix worked for every variant) is refused, not resumed on other data."""
    ds, run = variants["bioD"], tmp_path / "r"

    def bios_units(config, ds):
        return Prefixed(FragmentTable(ds.population, ds.tokenizer), config["useful_prefix"])

    with monkeypatch.context() as m:
        m.setattr(train, "run_table", bios_units)
        options = dict(batch=2, device="cpu", useful_prefix=PREFIX, stop_after=1)
        assert not train.train(str(ds.path), "gpt2-1-1", 3, run, **options)["finished"]
    with pytest.raises(InputError, match="cannot be resumed"):
        train.train(None, None, None, run, device="cpu", resume=True)


@pytest.mark.parametrize(
    "variant, junk, prefix, made, refused",
    [
        ("bioD", {"fraction": 0.5}, None, "0.2.0", True),  # its junk was bioS text
        ("bioD", None, "<|useful|>", "0.2.0", True),
        ("bioR-style", None, "<|useful|>", "0.1.0", True),
        ("bioR-style", {"fraction": 0.5}, None, "0.2.0", False),  # bioS junk, as today
        ("bioS", {"fraction": 0.5}, "<|useful|>", "0.2.0", False),
        ("bioD", {"fraction": 0.5}, "<|useful|>", "0.2.1", False),
        ("bioD", None, None, "0.1.0", False),
    ],
)
def test_a_run_of_a_wrongly_rendered_mixture_is_refused(variant, junk, prefix, made, refused):
    """Runs whose junk or prefix an older bioknow rendered as bioS text for bioD or
    bioR-style data are refused by eval, probe, export and resume (they share the check)."""
    from bioknow.base.consistency import check_mixture

    config = {"variant": variant, "junk": junk, "useful_prefix": prefix,
              "versions": {"bioknow": made}}  # fmt: skip
    if refused:
        with pytest.raises(InputError, match=f"bioknow {made}.*train it again"):
            check_mixture(Path("run"), config)
    else:
        check_mixture(Path("run"), config)
