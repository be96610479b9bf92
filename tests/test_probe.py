"""The knowledge-extraction probe: QA data, the split, the LoRA fine-tune and its scores."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import TINY_DATA, copy_tiny, run_cli

import bioknow
from bioknow.base import integrity
from bioknow.data import tokenizer
from bioknow.data.fields import POSSESSIVE
from bioknow.data.population import Population
from bioknow.data.render import biod
from bioknow.data.render.tokens import LABELS
from bioknow.data.stream import EVAL_EXPOSURE, sample_people
from bioknow.measure import probe, qa
from bioknow.study import sweep
from bioknow.training import train

N = 300


@pytest.fixture(scope="module")
def population(default_fields):
    return Population.build(default_fields, 5, N)


@pytest.fixture(scope="module", params=["default", "small-vocab"])
def bios_qa(request, population, default_fields):
    vocab = tokenizer.DEFAULT_VOCAB if request.param == "default" else 700
    return qa.QATable(population, tokenizer.train(default_fields, vocab), "bioS")


@pytest.fixture(scope="module")
def biod_qa(population, default_fields):
    params = biod.BioDParams(k=3, c=2, d=50, l=2, t=30)
    tok = biod.tokenizer(default_fields, params, vocab_size=400)
    return qa.QATable(population, tok, "bioD", biod.BioDTable(population, tok, params))


def expected_labels(table: qa.QATable, item: int, text: str, encoding) -> list[int]:
    """The label of each token of a QA text, from where its characters lie: the value's
    attribute (bioD: its first chunk, the later chunks, the "," between), the name, else
    other."""
    person, attribute = (int(x) for x in table.split(item))
    name = table.population.full_name(person)
    name_at = text.index(name)
    answer = text.rindex(" Answer: ") + len(" Answer: ")
    out = []
    for start, end in encoding.offsets:
        start += text[start] == " "
        if name_at <= start and end <= name_at + len(name):
            out.append(LABELS.index("name"))
        elif start >= answer and table.biod is None:
            out.append(LABELS.index(table.attributes[attribute]))
        elif start >= answer:
            first = start < text.index(",", answer) if "," in text[answer:] else True
            label = "other" if text[start] == "," else "chunk_first" if first else "chunk"
            out.append(LABELS.index(label))
        else:
            out.append(LABELS.index("other"))
    return out


@pytest.mark.parametrize("exposure", [0, 7, EVAL_EXPOSURE])
@pytest.mark.parametrize("kind", ["bioS", "bioD"])
def test_qa_texts_assemble_to_their_tokens_and_labels(kind, exposure, bios_qa, biod_qa):
    table = bios_qa if kind == "bioS" else biod_qa
    items = np.arange(len(table))
    units = table.assemble(items, exposure)
    assert table.lengths(items, exposure).tolist() == np.diff(units.offsets).tolist()
    assert np.diff(units.offsets).max() <= table.longest()
    texts = [table.text(i, exposure) for i in items]
    encodings = table.tokenizer.encode_batch(texts, add_special_tokens=False)
    for i, (text, enc) in enumerate(zip(texts, encodings, strict=True)):
        ids, labels = units.unit(i)
        assert ids[0] == table.eot and ids[1:].tolist() == enc.ids, text
        assert labels[1:].tolist() == expected_labels(table, i, text, enc), text
    assert table.mismatches(items[:50], exposure) == []


def test_qa_texts_read_as_questions(bios_qa, biod_qa, population):
    person = 4
    name = population.full_name(person)
    for attribute in qa.BIOS_ATTRIBUTES:
        item = person * 5 + qa.BIOS_ATTRIBUTES.index(attribute)
        text = bios_qa.text(item, 0)
        assert name in text and text.endswith("? Answer: " + population.value(attribute, person))
    text = biod_qa.text(person * 3 + 2, 0)
    assert "ID 3" in text and name in text and text.count("<|t") == 2 * 2
    assert not any(p in text.lower().split() for p in POSSESSIVE)  # no gender given away


def test_every_phrasing_is_used(bios_qa):
    items = np.arange(0, len(bios_qa), 5)  # every person's birth date
    seen = {int(p) for e in range(8) for p in bios_qa.phrasing(items, e)}
    assert seen == set(range(bios_qa.counts[0]))


def test_a_malformed_question_is_refused():
    for bad in ("What is {value} of {subject}?", "Who is{subject}? Answer: {value}"):
        with pytest.raises(qa.InputError):
            qa.parse_question("test", bad)
    with pytest.raises(qa.InputError, match="no QA"):
        qa.attributes("bioX", None)


def test_the_split_is_deterministic_and_disjoint():
    train_half, test_half = probe.split_people(101, None, seed=3)
    again = probe.split_people(101, None, seed=3)
    assert train_half.tolist() == again[0].tolist() and test_half.tolist() == again[1].tolist()
    assert not set(train_half) & set(test_half)
    assert sorted([*train_half, *test_half]) == list(range(101))
    assert (len(train_half), len(test_half)) == (50, 51)
    assert probe.split_people(101, None, seed=4)[0].tolist() != train_half.tolist()
    train_half, test_half = probe.split_people(1000, 40, seed=3)
    assert sorted([*train_half, *test_half]) == sample_people(1000, 40, 3).tolist()


def greedy_answers(model, table: qa.QATable, items) -> list[bool]:
    """Whether generating token by token, greedily, after each question reproduces its
    answer's scored tokens: the probe's exact match, decided without its code."""
    units = table.assemble(items, EVAL_EXPOSURE)
    out = []
    for i in range(len(items)):
        ids, labels = units.unit(i)
        start = int(np.flatnonzero(np.isin(labels, list(probe.ANSWER)))[0])
        x = torch.tensor(ids[:start], dtype=torch.long)[None]
        for _ in range(len(ids) - start):
            with torch.no_grad():
                x = torch.cat([x, model(x)[0][:, -1].argmax(-1, keepdim=True)], 1)
        out.append(x[0, start:].tolist() == ids[start:].tolist())
    return out


@pytest.fixture(scope="module")
def stored(tmp_path_factory, one_torch_thread):
    """bioD(24 people, 2 attributes of one chunk): a gpt2-1-2 that stores all of it."""
    root = tmp_path_factory.mktemp("stored")
    assert run_cli(*TINY_DATA, "--out", root / "data")[0] == 0
    args = ["--model", "gpt2-1-2", "--exposures", 300, "--batch", 1, "--lr", 3e-3]
    assert run_cli("train", "--data", root / "data", *args, "--out", root / "run")[0] == 0
    return root


def test_oracle_a_fine_tuned_model_answers_every_trained_question(stored, one_torch_thread):
    options = dict(epochs=20, batch=8, device="cpu")
    report = probe.probe_run(stored / "run", **options)
    assert report["train"]["accuracy"] == 1.0  # 12 people x 2 attributes
    assert report["train_people"] == 12 and report["test_people"] == 12
    assert json.loads((stored / "run" / "probe.json").read_text()) == report
    integrity.check_run_file(stored / "run", "probe.json")
    assert bioknow.run_info(stored / "run")["probes"] == {"probe.json": report}
    # the exact match is greedy generation's: checked by decoding, on the test half
    config, model, _ = train.load_run(stored / "run")
    table = probe.qa_table(config, train.open_run_dataset(config))
    probe.add_lora(model, 8, 128)
    halves = probe.split_people(config["n"], None, 0)
    cpu = torch.device("cpu")
    probe.finetune(model, table, table.items(halves[0]), {**options, "seed": 0}, cpu, False)
    scored = probe.answered(model, table, halves[1], 64, cpu).ravel()
    assert scored.tolist() == greedy_answers(model, table, table.items(halves[1]))


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """A bioD run of 400 people stopped after one step: it stores next to nothing."""
    root = tmp_path_factory.mktemp("untrained")
    data = "generate bioD --n 400 --k 2 --c 1 --d 4 --l 1 --t 8 --vocab-size 320".split()
    assert run_cli(*data, "--out", root / "data")[0] == 0
    args = ["--model", "gpt2-1-1", "--exposures", 1, "--batch", 1, "--stop-after", 1]
    assert run_cli("train", "--data", root / "data", *args, "--out", root / "run")[0] == 0
    return root


def test_a_model_that_stores_nothing_scores_chance(untrained, one_torch_thread, capsys):
    status, out, _ = run_cli("probe", untrained / "run", "--epochs", 3, "--device", "cpu")
    assert status == 0 and "test" in out and "ID 2" in out
    report = json.loads((untrained / "run" / "probe.json").read_text())
    assert report["test_people"] == 200 and report["attributes"]["ID 1"]["chance"] == 0.25
    for attribute in report["attributes"].values():
        assert 0.1 < attribute["test"]["accuracy"] < 0.4  # one of 4 values: chance is 0.25
        low, high = attribute["test"]["ci95"]
        assert low <= attribute["test"]["accuracy"] <= high


@pytest.mark.parametrize(
    "args, message",
    [
        (["--people", 25], "more than the run's 24 people"),
        (["--people", 1], "--people must be"),
        (["--epochs", 0], "--epochs must be"),
        (["--embedding-rank", -1], "--embedding-rank must be"),
        (["--device", "tpu"], "--device must be"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tiny, tmp_path, args, message):
    root = copy_tiny(tiny, tmp_path / "t")
    status, out, err = run_cli("probe", root / "run", *args)
    assert status == 2 and out == "" and err.count("\n") == 1 and message in err
    assert not (root / "run" / "probe.json").exists()


def test_a_run_without_its_dataset_exits_2(tiny, tmp_path):
    root = copy_tiny(tiny, tmp_path / "t")
    shutil.rmtree(root / "data")
    status, _, err = run_cli("probe", root / "run")
    assert status == 2 and err.count("\n") == 1 and str(root / "data") in err
    assert not (root / "run" / "probe.json").exists()
    status, _, err = run_cli("probe", tmp_path / "nowhere")
    assert status == 2 and "not a bioknow run" in err


def test_a_variant_without_qa_exits_2(tiny, tmp_path, monkeypatch):
    root = copy_tiny(tiny, tmp_path / "t")
    monkeypatch.setattr(qa, "VARIANTS", ("bioS", "bioS-simple", "bioR-style"))
    status, _, err = run_cli("probe", root / "run")
    assert status == 2 and err.count("\n") == 1 and "bioD data has no QA templates" in err
    assert not (root / "run" / "probe.json").exists()


def test_the_sweep_runs_the_probe_and_tabulates_it(untrained, tmp_path):
    data = {"variant": "bioD", "n": 400, "k": 2, "c": 1, "d": 4, "l": 1, "t": 8}
    config = {"datasets": [data], "models": ["gpt2-1-1"], "exposures": 1}
    config["probe"] = {"epochs": 3, "people": 100}
    checked = sweep.check_config(config)
    point = sweep.points(config)[0]
    run = tmp_path / "runs" / point.id
    shutil.copytree(untrained / "run", run)  # a trained, evaluated point, not yet probed
    assert run_cli("eval", run, "--device", "cpu")[0] == 0
    command = sweep.commands(point, tmp_path, checked)[-1]
    assert command[3:] == ["probe", str(run), "--epochs", "3", "--people", "100"]
    assert not sweep.point_done(point, tmp_path, checked, ["none"])
    assert run_cli(*command[3:], "--device", "cpu")[0] == 0
    row = sweep.row(point, tmp_path, checked, "none", "pending", None)
    assert row["probe_report"] == "probe-people100-seed0.json" and row["probe_people"] == 100
    assert 0 <= row["probe_test_accuracy"] <= 1 and "probe_ID_2_train_accuracy" in row
    assert row["probe_test_ci95_low"] <= row["probe_test_accuracy"] <= row["probe_test_ci95_high"]
    assert "R" in row  # beside the bits
    assert sweep.check_config({**config, "probe": True})["probe"] == {}
    assert sweep.check_config({**config, "probe": False})["probe"] is None
    for bad in ({"epochs": 0}, {"device": "cpu"}, "yes"):
        with pytest.raises(sweep.InputError, match="probe"):
            sweep.check_config({**config, "probe": bad})
