"""`bioknow plan`: its tokens and FLOPs equal those real runs record, its CPU time is
within a stated factor of a measured sweep's, its JSON has a fixed shape, and it refuses
what it cannot price."""

import json
import math
import resource
from pathlib import Path

import pytest
import yaml

from bioknow import cli
from bioknow.study import plan, sweep

# Every figure is exact; the CPU estimate of a tiny sweep (commands' start-up, table
# building and imports dominate it) must be within this factor of its measured time: the
# CPU seconds of its one-thread commands, which is their wall time on a machine they have
# to themselves (on a shared machine the wall time says how busy it is, not what the
# sweep costs).
TIME_FACTOR = 3
GRID = {  # two points as a real sweep runs them, each command in its own process
    "datasets": [{"variant": "bioS-simple", "n": 30, "seed": 0, "vocab_size": 320}],
    "models": ["gpt2-1-1", "gpt2-1-2"],
    "exposures": 2,
    "recipe": {"batch": 4},
}
JUNK = {  # online data, junk windows and a useful-data prefix (run in this process)
    "datasets": [{"variant": "bioS", "n": 30, "seed": 1, "vocab_size": 320}],
    "models": ["gpt2-1-1"],
    "exposures": 2,
    "train": {"junk_fraction": 0.6, "junk_n": 1000, "useful_prefix": "<|useful|>"},
    "recipe": {"batch": 4},
}
BIOD = {"variant": "bioD", "n": 20, "seed": 2, "vocab_size": 320}
JUNK_BIOD = {**JUNK, "datasets": [{**BIOD, "k": 2, "c": 3, "d": 10, "l": 1, "t": 20}]}  # bioD


@pytest.fixture(scope="module")
def swept(tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp("plan")
    (root / "grid.yaml").write_text(yaml.safe_dump(GRID))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    argv = ["sweep", str(root / "grid.yaml"), "--out", str(root / "s"), "--cpu-slots", "2"]
    assert cli.main(argv) == 0  # two runs at once, one thread each
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = sum(getattr(after, k) - getattr(before, k) for k in ("ru_utime", "ru_stime"))
    (root / "cpu_seconds").write_text(str(seconds))
    junk = sweep.run_sweep(JUNK, root / "junk", device="cpu", children=cli.InProcess())
    assert all(r["status"] == "done" for r in junk)
    biod = sweep.run_sweep(JUNK_BIOD, root / "junk-biod", device="cpu", children=cli.InProcess())
    assert all(r["status"] == "done" for r in biod)
    return root


def recorded_run(run: Path) -> dict:
    """What a run recorded: its config's steps, tokens and FLOPs per token, and the
    tokens of its last metrics line."""
    config = json.loads((run / "config.json").read_text())
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    return {
        "steps": config["steps"],
        "tokens": last["tokens"],
        "junk_tokens": last["junk_tokens"],
        "flops_per_token": config["flops_per_token"],
        "config_tokens": config["tokens"],
    }


@pytest.mark.parametrize("name, grid", [("s", GRID), ("junk", JUNK), ("junk-biod", JUNK_BIOD)])
@pytest.mark.parametrize("on_the_sweeps_data", [True, False])
def test_tokens_and_flops_equal_the_runs(swept, name, grid, on_the_sweeps_data):
    data = swept / name / "data" if on_the_sweeps_data else None
    result = plan.plan(grid, "cpu", data=data)
    assert result["total"]["exact"]
    for point in result["points"]:
        run = recorded_run(swept / name / "runs" / point["point"])
        assert run["tokens"] == run["config_tokens"] == point["tokens"]
        assert point["junk_tokens"] == run["junk_tokens"]
        assert point["steps"] == run["steps"]
        assert point["flops_per_token"] == run["flops_per_token"]
        seen = run["tokens"] + run["junk_tokens"]
        assert point["flops"] == run["flops_per_token"] * seen
    if name != "s":
        assert result["points"][0]["junk_tokens"] > 0  # the junk windows are counted
        # the prefix is one token a unit, whatever the variant
        plain = {**grid, "train": {k: v for k, v in grid["train"].items() if k != "useful_prefix"}}
        point, unprefixed = result["points"][0], plan.plan(plain, "cpu", data=data)["points"][0]
        assert point["tokens"] == unprefixed["tokens"] + point["n"] * point["exposures"]


def test_cpu_time_is_within_the_stated_factor_of_a_measured_sweep(swept):
    measured = float((swept / "cpu_seconds").read_text())
    result = plan.plan(GRID, "cpu", data=swept / "s" / "data")
    estimate = sum(p["seconds"] for p in result["points"])  # one run at a time, as measured
    assert measured / TIME_FACTOR <= estimate <= measured * TIME_FACTOR, (estimate, measured)


def test_json_shape(swept, capsys):
    config = swept / "grid.yaml"
    assert cli.main(["plan", str(config), "--device", "cpu", "--gpus", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {
        "config",
        "device",
        "gpus",
        "gpus_per_point",
        "device_memory_bytes",
        "time_model",
        "points",
        "datasets",
        "total",
    }
    assert (out["device"], out["gpus"], out["config"]) == ("cpu", 2, str(config))
    assert "docs/benchmarks/train.json" in out["time_model"]
    assert [p["model"] for p in out["points"]] == GRID["models"]
    point_keys = {"point", "tokens", "junk_tokens", "flops", "seconds", "device_hours"}
    assert point_keys | {"memory_bytes", "fits", "checkpoint_bytes", "exact"} <= set(
        out["points"][0]
    )
    total = out["total"]
    assert total["tokens"] == sum(p["tokens"] for p in out["points"])
    assert total["disk_bytes"]["total"] == sum(
        total["disk_bytes"][k] for k in ("datasets", "checkpoints", "reports")
    )
    assert total["seconds"] >= max(p["seconds"] for p in out["points"])
    assert [d["n"] for d in out["datasets"]] == [30]


def test_text_and_the_sweeps_short_form(swept, capsys):
    assert cli.main(["plan", str(swept / "grid.yaml")]) == 0
    text = capsys.readouterr().out
    assert "plan: 2 points" in text and "on 1 H100" in text
    assert f"x assumed utilization {plan.ASSUMED_MFU}" in text
    # a sweep run again (everything done) prints the short form as it starts
    assert cli.main(["sweep", str(swept / "grid.yaml"), "--out", str(swept / "s")]) == 0
    err = capsys.readouterr().err
    assert "plan: 2 points, " in err and "CPU run(s) at once" in err


def test_measured_gpu_figures_replace_the_assumption(swept, tmp_path, monkeypatch):
    assumed = plan.plan(GRID, "h100")["points"][0]
    monkeypatch.setattr(plan, "BENCHMARKS", tmp_path)
    rate = 1e6  # tokens/s of gpt2-1-1, measured
    runs = [{"model": "gpt2-1-1", "flops_per_token": 909312, "bf16": {"tokens_per_s": rate}}]
    bench = [{"benchmark": "train", "device": "cuda", "runs": runs}]  # gpu-check's list
    (tmp_path / "train-h100.json").write_text(json.dumps(bench))
    result = plan.plan(GRID, "h100")
    point = result["points"][0]
    assert "docs/benchmarks/train-h100.json" in result["time_model"]
    commands = 2 * plan.COMMAND_S["gpu"]
    train_s = point["flops"] / (rate * 909312)
    assert point["seconds"] - commands == pytest.approx(train_s, rel=0.5)  # + its evaluation
    assert point["seconds"] != assumed["seconds"] and point["flops"] == assumed["flops"]


def status_of(argv: list[str]) -> int:
    """cli.main's exit status, argparse's refusals included."""
    try:
        return cli.main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize(
    "config, options, message",
    [
        (GRID, ["--gpus", "0"], "--gpus"),
        (GRID, ["--device", "tpu"], "--device must be one of cpu, h100, h200, a100"),
        ({**GRID, "gpus_per_point": 2}, ["--gpus", "3"], "not a multiple of gpus_per_point 2"),
        ({**GRID, "models": ["gpt3-1-1"]}, [], "unknown model name"),
        (None, [], "unreadable config"),
    ],
)
def test_refusals(tmp_path, capsys, config, options, message):
    path = tmp_path / "c.yaml"
    if config is not None:
        path.write_text(yaml.safe_dump(config))
    before = sorted(tmp_path.iterdir())
    assert status_of(["plan", str(path), *options]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert sorted(tmp_path.iterdir()) == before  # nothing written


def test_unreadable_benchmarks_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plan, "BENCHMARKS", tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(GRID))
    assert cli.main(["plan", str(config), "--device", "cpu"]) == 2
    assert "train.json: missing" in capsys.readouterr().err
    (tmp_path / "train-h200.json").write_text('{"runs": [{"model": "gpt2-1-1"}]}')
    assert cli.main(["plan", str(config), "--device", "h200"]) == 2
    assert "not a training benchmark" in capsys.readouterr().err


def test_totals_spread_points_over_the_devices():
    points = [
        {"seconds": s, "tokens": 1, "junk_tokens": 0, "flops": 1, "device_hours": s / 3600}
        | {"memory_bytes": 1, "fits": True, "exact": True}
        | {"checkpoint_bytes": 1, "report_bytes": 1}
        for s in (100.0, 300.0, 200.0)
    ]
    datasets = [{"bytes": 5, "generate_s": 10.0}]
    assert plan.totals(points, datasets, 1)["seconds"] == 610.0
    assert plan.totals(points, datasets, 2)["seconds"] == 310.0
    assert plan.totals(points, datasets, 8)["seconds"] == 310.0  # none shorter than the longest
    assert math.isclose(plan.totals(points, datasets, 3)["device_hours"], 600 / 3600)
    assert plan.totals(points, datasets, 3)["disk_bytes"]["total"] == 5 + 3 + 3
