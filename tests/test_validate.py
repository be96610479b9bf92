"""Bad input, by class: exit status 2, one line naming the problem, nothing written."""

import math
from pathlib import Path

import pytest
import yaml
from conftest import run_cli, tree_bytes

from bioknow.base import validate
from bioknow.base.errors import InputError


@pytest.mark.parametrize(
    "rule, value, expected",
    [
        (validate.Number(1, 10), "1e1", 10),
        (validate.Number(1, 10), 3.0, 3),
        (validate.Number(1, 10), "1_0", 10),
        (validate.Number(0, 1, real=True, above=True), "3e-3", 0.003),
        (validate.People(), "all", None),
        (validate.Choice(("a", "b")), "b", "b"),
        (validate.InPath(), Path("data/x"), "data/x"),
        (validate.InPath(), "gpt2", "gpt2"),
        (validate.SlurmTime(), "90", 90),
        (validate.SlurmTime(), 90, 90),
        (validate.SlurmTime(), "5:30", 6),
        (validate.SlurmTime(), "4:00:00", 240),
        (validate.SlurmTime(), "2-00:00:00", 2880),
        (validate.SlurmTime(), "1-12", 2160),
        (validate.SlurmTime(), "1-0:30", 1470),
        (validate.SlurmMemory(), "64G", "64G"),
        (validate.SlurmMemory(), 4000, "4000"),
        (validate.SbatchOptions(), ["qos=high", "exclusive"], {"qos": "high", "exclusive": True}),
        (validate.SbatchOptions(), {"constraint": "a100"}, {"constraint": "a100"}),
        (validate.SbatchOptions(), "mail-type=END,FAIL", {"mail-type": "END,FAIL"}),
    ],
)
def test_rules_accept(rule, value, expected):
    assert rule(value, "--x") == expected


@pytest.mark.parametrize(
    "rule, value",
    [
        (validate.Number(1, 10), value)
        for value in ("0", "11", "1.5", 100.7, "abc", "", None, True, "nan", "inf", "1e400", [1])
    ]
    + [
        (validate.Number(0, 1, real=True, above=True), value)
        for value in ("0", "-1", "inf", "nan", math.nan, -math.inf, "2")
    ]
    + [(validate.SEED, value) for value in ("-1", "1e30", 2**63)]
    + [(validate.Device(), value) for value in ("gpu", "cuda:x", "", 0)]
    + [(validate.Text(), value) for value in ("", " ", "a\nb", 3, Path("a"))]
    + [(validate.InPath(), value) for value in ("", Path("a\nb"), 3)]
    + [(validate.SlurmTime(), value) for value in ("0", "0:30:x", "1:2:3:4", "-5", "", True, 1.5)]
    + [(validate.SlurmTime(), value) for value in ("400-00:00:00", "1:00:00:00", "0:00")]
    + [(validate.SlurmMemory(), value) for value in ("64GB", "0", "1.5G", "", "-1G", True)]
    + [
        (validate.SbatchOptions(), value)
        for value in (["time=5"], ["array=0-3"], ["signal=USR1@60"], ["=x"], ["qos="], [3], 3)
    ],
)
def test_rules_refuse(rule, value):
    with pytest.raises(InputError, match="--x"):
        rule(value, "--x")


def refused(tmp_path, *args) -> str:
    """Run a command in a folder; it must exit 2 with one line and write nothing."""
    before = tree_bytes(tmp_path)
    status, out, err = run_cli(*args)
    assert status == 2, (args, out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert tree_bytes(tmp_path) == before
    return err


CASES = {
    "eval": [
        ["--batch", "0"],
        ["--batch", "-1"],
        ["--device", "gpu"],
        ["--people", "10", "--seed", "-1"],
        ["--people", "0"],
        ["--quantize", "int3"],
        ["--batch", "1e9"],
    ],
    "train": [
        ["--checkpoint-every", "0"],
        ["--log-every", "0"],
        ["--lr", "nan"],
        ["--lr", "inf"],
        ["--lr", "-1"],
        ["--wd", "-1"],
        ["--warmup", "-5"],
        ["--seed", "1e30"],
        ["--batch", "1.5"],
        ["--exposures", "1e30"],
        ["--junk-fraction", "1"],
        ["--junk-n", "10"],
        ["--device", "tpu"],
        ["--model", "gpt2-0-1"],
        ["--model", "gpt2-4000-4000"],
    ],
    "resume": [["--model", "gpt2-1-1"], ["--exposures", "3"], ["--batch", "2"], ["--seed", "0"]],
    "generate": [
        ["bioS", "--n", "10", "--out", "."],
        ["bioS", "--n", "10", "--out", "afile/sub"],
        ["bioS", "--n", "10", "--out", "afile"],
        ["bioS", "--n", "1e30", "--out", "x"],
        ["bioS", "--n", "10", "--sample", "-1", "--out", "x"],
        ["bioS", "--n", "10", "--vocab-size", "10", "--out", "x"],
        ["bioS", "--n", "10", "--renderings", "3", "--out", "x"],
        ["bioD", "--n", "10", "--k", "1", "--c", "1", "--d", "1e12", "--l", "4", "--t", "40000"],
        ["bioD", "--n", "10", "--k", "1e9", "--c", "1", "--d", "1", "--l", "4", "--t", "400"],
        ["bioD", "--n", "10", "--k", "1", "--c", "1", "--d", "1", "--l", "4", "--t", "100000"],
        ["bioD", "--n", "10", "--k", "1", "--c", "1", "--d", "20", "--l", "1", "--t", "4"],
    ],
    "probe": [
        ["--people", "1"],
        ["--people", "25"],
        ["--seed", "-1"],
        ["--epochs", "1.5"],
        ["--batch", "0"],
        ["--rank", "0"],
        ["--embedding-rank", "nan"],
        ["--device", "gpu"],
    ],
    "corpus": [["--seed", "1e25"], ["--exposures", "1e30"], ["--exposures", "0"]],
    "plot": [["--dpi", "1e6"], ["--dpi", "0"], ["--out", "."]],
}


@pytest.mark.parametrize(
    "command, args", [(c, a) for c, cases in CASES.items() for a in cases], ids=str
)
def test_bad_arguments(tiny, tmp_path, command, args):
    (tmp_path / "afile").write_text("a file")
    data, run = tiny / "data", tiny / "run"
    if command in ("eval", "probe"):
        args = [command, run, *args]
    elif command == "train":
        base = ["--data", data, "--model", "gpt2-1-1", "--exposures", "1", "--device", "cpu"]
        given = {a for a in args if a.startswith("--")}
        base = [x for i, x in enumerate(base) if x not in given and base[i - 1] not in given]
        args = ["train", *base, *args, "--out", tmp_path / "new"]
    elif command == "resume":
        args = ["train", "--resume", "--out", run, *args]
    elif command == "generate":
        args = ["generate", *args] + ([] if "--out" in args else ["--out", tmp_path / "x"])
        args = [tmp_path / a if a in ("afile/sub", "afile") else a for a in args]
    elif command == "corpus":
        args = ["corpus", data, "--exposures", "1", *args, "--out", tmp_path / "c"]
    else:
        args = ["plot", tmp_path, "--out", tmp_path / "p.png", *args]
    before = tree_bytes(tiny)
    err = refused(tmp_path, *args)
    assert tree_bytes(tiny) == before
    if "." in args:
        assert "--out" in err


SWEEP = {
    "datasets": [{"variant": "bioS-simple", "n": 10, "seed": 0}],
    "models": ["gpt2-1-1"],
    "exposures": 2,
    "train": {"device": "cpu"},
}


@pytest.mark.parametrize(
    "change",
    [
        {"datasets": [{"variant": "bioS", "n": "abc"}]},
        {"datasets": [{"variant": "bioS", "n": 100.7}]},
        {"datasets": [{"variant": "bioS", "n": None}]},
        {"datasets": [{"variant": "bioS", "n": float("inf")}]},
        {"datasets": [{"variant": "bioS", "n": 10, "seed": float("nan")}]},
        {"datasets": [{"variant": "bioX", "n": 10}]},
        {"datasets": [{"variant": "bioD", "n": 10, "k": 1}]},
        {"datasets": []},
        {"datasets": [{"variant": "bioS", "n": []}]},
        {"datasets": ["bioS"]},
        {"seeds": ["x"]},
        {"seeds": [None]},
        {"exposures": 1.5},
        {"exposures": 0},
        {"exposures": [2, None]},
        {"models": []},
        {"models": [None]},
        {"models": ["gpt9-1-1"]},
        {"train": {"foo": 1}},
        {"train": {"lr": 0.1}},
        {"train": {"no_compile": "yes"}},
        {"train": "cpu"},
        {"recipe": {"lr": "abc"}},
        {"recipe": {"lr": [1e-3, float("nan")]}},
        {"recipe": {"batch": 0}},
        {"quantize": ["int3"]},
        {"quantize": []},
        {"eval": {"people": 0}},
        {"eval": {"foo": 1}},
        {"colour": "red"},
        {"gpus_per_point": 0},
        {"gpus_per_point": 1.5},
        {"gpus_per_point": None},
        {"gpus_per_point": [2]},
        {"train": {"device": "cpu", "junk_fraction": 0.5}},  # train's own checks, per point
        {"recipe": {"batch": 3}, "gpus_per_point": 2},
    ],
    ids=str,
)
def test_bad_sweep_configs(tmp_path, change):
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump({**SWEEP, **change}))
    refused(tmp_path, "sweep", config, "--out", tmp_path / "s")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("content", [b"models: [\xff\xfe]\n", b"- a list\n", b"{unclosed", b""])
def test_unreadable_sweep_configs(tmp_path, content):
    (tmp_path / "grid.yaml").write_bytes(content)
    refused(tmp_path, "sweep", tmp_path / "grid.yaml", "--out", tmp_path / "s")


def test_a_refused_config_leaves_the_folder_free_for_the_right_one(tmp_path):
    """Nothing of a rejected config is written, so the corrected one is not refused as
    'another config'."""
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump({**SWEEP, "quantize": ["int3"]}))
    refused(tmp_path, "sweep", config, "--out", tmp_path / "s")
    from bioknow.study import sweep

    config.write_text(yaml.safe_dump(SWEEP))
    assert len(sweep.points(sweep.load_config(config))) == 1
    assert not (tmp_path / "s").exists()


SLURM_LINES = [
    ["--partition", "gpu"],  # a Slurm option without --launcher slurm
    ["--no-wait"],
    ["--launcher", "slurm"],  # no --time
    ["--launcher", "slurm", "--time", "0"],
    ["--launcher", "slurm", "--time", "5", "--mem", "lots"],
    ["--launcher", "slurm", "--time", "5", "--gpus-per-job", "-1"],
    ["--launcher", "slurm", "--time", "5", "--max-jobs", "0"],
    ["--launcher", "slurm", "--time", "5", "--sbatch", "partition=gpu"],
    ["--launcher", "slurm", "--time", "1", "--signal-delay", "60"],
    ["--launcher", "slurm", "--time", "5", "--device", "cpu", "--gpus-per-job", "1"],
    ["--launcher", "cloud"],
]


@pytest.mark.parametrize("line", SLURM_LINES, ids=" ".join)
def test_bad_slurm_options(tmp_path, line):
    """Refused before anything is written, Slurm there or not."""
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(SWEEP))
    refused(tmp_path, "sweep", config, "--out", tmp_path / "s", *line)
    assert not (tmp_path / "s").exists()


def test_gpus_per_job_must_hold_whole_points(tmp_path):
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump({**SWEEP, "train": {}, "gpus_per_point": 2}))
    line = ["--launcher", "slurm", "--time", "5", "--gpus-per-job", "3"]
    err = refused(tmp_path, "sweep", config, "--out", tmp_path / "s", *line)
    assert "multiple of gpus_per_point" in err


def test_a_sweep_point_that_cannot_fit_is_refused_before_anything_is_written(tmp_path):
    """Train's memory check, applied to every point before sweep.json or data exist."""
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump({**SWEEP, "models": ["gpt2-1-1", "gpt2-9999-9999"]}))
    err = refused(tmp_path, "sweep", config, "--out", tmp_path / "s")
    assert "gpt2-9999-9999" in err and "memory" in err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "name, content, key",
    [
        ("grid.yaml", "models: [gpt2-1-1]\nexposures: 2\nmodels: [gpt2-2-2]\n", "models"),
        ("grid.yaml", "datasets:\n- {variant: bioS, n: 10, n: 20}\nmodels: [a]\n", "n"),
        (
            "grid.json",
            '{"models": ["gpt2-1-1"], "train": {"device": "cpu", "device": "x"}}',
            "device",
        ),
    ],
    ids=["yaml", "yaml-nested", "json"],
)
def test_duplicate_keys_in_configs(tmp_path, name, content, key):
    (tmp_path / name).write_text(content)
    err = refused(tmp_path, "sweep", tmp_path / name, "--out", tmp_path / "s")
    assert f"duplicate key '{key}'" in err


def test_method_needs_quantize(tiny, tmp_path):
    """--method chooses how to quantize: alone it would be silently ignored."""
    for line in (["--method", "rtn"], ["--method", "gptq", "--quantize", "none"]):
        before = tree_bytes(tiny)
        err = refused(tmp_path, "eval", tiny / "run", "--device", "cpu", *line)
        assert "--method" in err and "--quantize" in err
        assert tree_bytes(tiny) == before


def test_a_missing_tokenizer_file_is_named_as_such(tmp_path):
    err = refused(
        tmp_path,
        "generate",
        "bioS",
        "--n",
        10,
        "--tokenizer",
        "/nonexistent/tok.json",
        "--out",
        tmp_path / "x",
    )
    assert "/nonexistent/tok.json: file not found" in err


def test_junk_fraction_names_its_range_one_way(tiny, tmp_path):
    """Refused by the validation layer or by train, the range reads the same."""
    base = ["train", "--data", tiny / "data", "--model", "gpt2-1-1", "--exposures", 1]
    for value in ("1", "2", "-0.5"):
        err = refused(tmp_path, *base, "--junk-fraction", value, "--out", tmp_path / "r")
        assert "[0, 1)" in err, err
