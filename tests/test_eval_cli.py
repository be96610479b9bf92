"""bioknow eval and export as a user runs them, on a tiny trained run."""

import json

import pytest

from bioknow import cli, dataset, train

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


def test_quantized_report(run, capsys):
    report = eval_json(capsys, run / "run", "--quantize", "int8", "--method", "rtn")
    assert report["quantize"] == "int8" and report["method"] == "rtn"
    assert report["before"]["R"] == pytest.approx(report["R"], rel=0.05)
    assert (run / "run" / "eval-int8-rtn.json").is_file()


def test_exported_model_gives_the_same_bits(run, capsys, tmp_path):
    assert cli.main(["export", str(run / "run"), "--out", str(tmp_path / "hf")]) == 0
    own = eval_json(capsys, run / "run")
    hf = eval_json(capsys, "--hf-model", tmp_path / "hf", "--data", run / "data")
    assert hf["P"] == own["P"]
    for key in ("p1", "p2", "bits", "R"):
        assert hf[key] == pytest.approx(own[key], rel=1e-4)


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "NOWHERE"],
        ["eval", "--hf-model", "NOWHERE"],
        ["eval", "RUN", "--people", "0"],
        ["eval", "RUN", "--quantize", "int3"],
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
