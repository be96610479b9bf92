"""bioknow eval and export as a user runs them, on a tiny trained run."""

import json

import pytest

from bioknow import cli
from bioknow.data import dataset
from bioknow.training import train
from bioknow.training.runfolder import info as run_info
from bioknow.training.runfolder import report_name

FIELDS = (
    "N",
    "P",
    "P_total",
    "P_nonembedding",
    "p1",
    "p2",
    "bits_name",
    "bits_value",
    "bits",
    "bits_max",
    "R",
    "R_max",
    "bits_clamped",
    "R_clamped",
    "attributes",
    "people",
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalcli")
    dataset.generate("bioS", 80, 3, root / "data", sample=0)
    train.train(str(root / "data"), "gpt2-1-2", 2, root / "run", batch=4, device="cpu")
    return root


def eval_json(capsys, *args) -> dict:
    capsys.readouterr()
    assert cli.main(["eval", *map(str, args), "--device", "cpu", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_writes_the_report(run, capsys):
    report = eval_json(capsys, run / "run")
    assert set(FIELDS) <= report.keys() and report["people"] == report["N"] == 80
    assert json.loads((run / "run" / "eval.json").read_text()) == report
    config = json.loads((run / "run" / "config.json").read_text())
    assert report["P"] == config["params"]["P"] and report["R_max"] > report["R"]
    assert cli.main(["eval", str(run / "run"), "--device", "cpu"]) == 0
    assert "bits per parameter" in capsys.readouterr().out


def test_sample_and_interval(run, capsys):
    report = eval_json(capsys, run / "run", "--people", "30", "--seed", "2")
    assert report["people"] == 30 and report["N"] == 80
    assert report["R_ci95"][0] <= report["R"] <= report["R_ci95"][1]
    assert report["report"] == "eval-people30-seed2.json"
    assert json.loads((run / "run" / "eval-people30-seed2.json").read_text()) == report


def test_reports_do_not_overwrite_each_other(run, capsys):
    full = eval_json(capsys, run / "run")
    assert full["report"] == "eval.json" and full["people"] == 80
    sample = eval_json(capsys, run / "run", "--people", "20", "--eval-batch", "8")
    assert sample["report"] == "eval-people20-seed0.json"
    old_spelling = eval_json(capsys, run / "run", "--people", "20", "--batch", "5")
    assert old_spelling["R"] == pytest.approx(sample["R"], rel=1e-6)
    everyone = eval_json(capsys, run / "run", "--people", "500")  # more than N: all of them
    assert everyone["report"] == "eval.json" and everyone["R"] == pytest.approx(full["R"])
    assert json.loads((run / "run" / "eval.json").read_text())["people"] == 80
    info = run_info(run / "run")
    assert {"eval.json", "eval-people20-seed0.json"} <= set(info["evals"])
    assert info["evals"]["eval-people20-seed0.json"]["people"] == 20
    assert cli.main(["info", str(run / "run")]) == 0
    out = capsys.readouterr().out
    assert "eval.json: all 80 people, R " in out
    assert "eval-people20-seed0.json: 20 of 80 people, R " in out


def test_quantized_report(run, capsys):
    report = eval_json(capsys, run / "run", "--quantize", "int8", "--method", "rtn")
    assert report["quantize"] == "int8" and report["method"] == "rtn"
    assert report["before"]["R"] == pytest.approx(report["R"], rel=0.05)
    assert report["report"] == "eval-int8-rtn.json"
    assert (run / "run" / "eval-int8-rtn.json").is_file()


@pytest.mark.parametrize(
    "args, name",
    [
        ((), "eval.json"),
        (("--people", "80"), "eval.json"),
        (("--people", "20"), "eval-people20-seed0.json"),
        (("--people", "20", "--seed", "3", "--quantize", "int4"), "eval-people20-seed3-int4.json"),
        (("--quantize", "int8"), "eval-int8.json"),
        (("--quantize", "int8", "--seed", "3"), "eval-seed3-int8.json"),
        (("--quantize", "int8", "--seed", "3", "--method", "rtn"), "eval-int8-rtn.json"),
        (("--seed", "3"), "eval.json"),
    ],
)
def test_report_names(args, name):
    options = dict(zip(args[::2], args[1::2], strict=True))
    people = int(options["--people"]) if "--people" in options else None
    seed = int(options.get("--seed", 0))
    quantize, method = options.get("--quantize", "none"), options.get("--method", "gptq")
    assert report_name(80, people, seed, quantize, method) == name


@pytest.fixture(scope="module")
def exported(run):
    assert cli.main(["export", str(run / "run"), "--out", str(run / "hf")]) == 0
    return run / "hf"


def test_exported_model_gives_the_same_bits(run, exported, capsys, tmp_path):
    own = eval_json(capsys, run / "run")
    hf = eval_json(capsys, "--hf-model", exported, "--data", run / "data")
    assert hf["P"] == own["P"]
    for key in ("p1", "p2", "bits", "R"):
        assert hf[key] == pytest.approx(own[key], rel=1e-4)
    assert json.loads((exported / "eval.json").read_text()) == hf  # beside the model
    chosen = tmp_path / "reports" / "hf-sample.json"
    args = ("--hf-model", exported, "--data", run / "data", "--people", 10, "--out", chosen)
    sample = eval_json(capsys, *args)
    assert json.loads(chosen.read_text()) == sample and sample["report"] == str(chosen)
    assert sample["people"] == 10 and not (exported / "eval-people10-seed0.json").exists()


@pytest.mark.parametrize("command", ["eval", "info", "export"])
def test_an_export_given_as_a_run_says_what_to_run(run, exported, capsys, tmp_path, command):
    export = exported
    capsys.readouterr()
    args = [command, str(export)] + (
        ["--out", str(tmp_path / "again")] if command == "export" else []
    )
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "a transformers export of run" in err and "not a run" in err
    assert f"bioknow eval --hf-model {export} --data {run / 'data'}" in err


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "NOWHERE"],
        ["eval", "--hf-model", "NOWHERE"],
        ["eval", "RUN", "--people", "0"],
        ["eval", "RUN", "--quantize", "int3"],
        ["eval", "RUN", "--data", "NOWHERE"],
        ["eval", "RUN", "--out", "OUT"],
        ["eval", "RUN", "--eval-batch", "0"],
        ["eval", "--hf-model", "RUN", "--data", "NOWHERE", "--quantize", "int8"],
        ["export", "NOWHERE", "--out", "OUT"],
    ],
)
def test_bad_input_exits_2(run, tmp_path, args):
    args = [
        str(run / "run") if a == "RUN" else str(tmp_path / a) if a in ("NOWHERE", "OUT") else a
        for a in args
    ]
    with pytest.raises(SystemExit) as exit_:
        raise SystemExit(cli.main(args))
    assert exit_.value.code == 2
    assert not (tmp_path / "OUT").exists()


def test_a_transformers_model_given_as_a_run_says_what_to_run(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"model_type": "llama"}')
    assert cli.main(["eval", str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "a transformers model, not a run" in err and "--hf-model" in err
