import json
import shutil
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import run_cli

from bioknow import cli
from bioknow.base import integrity
from bioknow.base.errors import InputError
from bioknow.study import grid as grid_size
from bioknow.study import slurm, sweep
from bioknow.training import train

EXAMPLE = Path(__file__).resolve().parent.parent / "scripts" / "sweep-cpu.yaml"
# the documented CPU example, shortened: one small population, two models, 2 exposures
GRID = {
    **yaml.safe_load(EXAMPLE.read_text()),
    "datasets": [{"variant": "bioS-simple", "n": 30, "seed": 0}],
    "models": ["gpt2-1-1", "gpt2-1-2"],
    "exposures": 2,
}


def write(tmp_path, config, name="grid.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    config = write(root, GRID)
    assert cli.main(["sweep", str(config), "--out", str(root / "s"), "--cpu-slots", "2"]) == 0
    return root


def test_grid_runs_end_to_end(done):
    rows = pq.read_table(done / "s" / "runs.parquet").to_pylist()
    assert [r["model"] for r in rows] == ["gpt2-1-1", "gpt2-1-2"]
    for r in rows:
        assert r["status"] == "done" and r["quantize"] == "none"
        assert r["R"] < r["R_max"] and 0 <= r["R_clamped"] and r["bits_max"] > 0 < r["P"]
        assert r["tokens_per_s"] > 0 and r["wall_s"] > 0 and r["steps"] > 0
        assert json.loads(r["config"])["model"]["name"] == r["model"]
        assert "birth_date_accuracy" in r
        assert r["report"] == "eval.json" and r["people"] == r["n"]
    assert (done / "s" / "runs.csv").read_text().startswith('"point","status"')
    assert len(list((done / "s" / "data").iterdir())) == 1  # one dataset, shared


def test_a_report_that_is_not_what_its_name_says_fails_its_row(done, tmp_path):
    """An older bioknow wrote a sample's report as eval.json: the table refuses it rather
    than mix it with evaluations of every person."""
    sweep_dir = tmp_path / "s"
    shutil.copytree(done / "s", sweep_dir)
    grid = sweep.points(sweep.load_config(done / "grid.yaml"))
    config = sweep.check_config(sweep.load_config(done / "grid.yaml"))
    run = sweep_dir / "runs" / grid[0].id
    report = integrity.read_run_json(run, "eval.json")
    integrity.write_run_json(run, "eval.json", {**report, "people": 10})
    failed = sweep.row(grid[0], sweep_dir, config, "none", "done", None)
    assert failed["status"] == "failed" and "not what its name says" in failed["error"]
    assert "R" not in failed
    assert sweep.row(grid[1], sweep_dir, config, "none", "done", None)["status"] == "done"


def test_cpu_slots_share_the_cores():
    envs = sweep.slots("cpu", per_gpu=1, cpu_slots=2)
    assert len(envs) == 2
    assert all(e["CUDA_VISIBLE_DEVICES"] == "" for e in envs)
    assert {e["OMP_NUM_THREADS"] for e in envs} == {str(sweep.cpu_threads(2))}
    assert sweep.cpu_threads(2) == max(1, sweep.cpu_threads(1) // 2)


def test_the_costliest_points_come_first(done):
    grid = sweep.points(sweep.load_config(done / "grid.yaml"))
    small, large = sorted(grid, key=sweep.cost)
    assert (small.model, large.model) == ("gpt2-1-1", "gpt2-1-2")
    longer = sweep.Point("", small.data, small.model, 10 * small.exposures, 0)
    assert sweep.cost(longer) == 10 * sweep.cost(small)


def test_a_second_run_skips_finished_points(done):
    logs = {p.name: p.read_text() for p in (done / "s" / "logs").iterdir()}
    rows = sweep.run_sweep(done / "grid.yaml", done / "s")
    assert {p.name: p.read_text() for p in (done / "s" / "logs").iterdir()} == logs
    assert [r["status"] for r in rows] == ["done", "done"]


def test_an_interrupted_point_resumes(tmp_path):
    config = write(tmp_path, {**GRID, "models": ["gpt2-1-1"]})
    point = sweep.points(sweep.load_config(config))[0]
    out = tmp_path / "s"
    (out / "data").mkdir(parents=True)
    from bioknow.base import ownership
    from bioknow.data import dataset

    ownership.write_marker(out, "sweep")  # as the interrupted sweep left its folder

    dataset.generate("bioS-simple", 30, 0, out / "data" / point.data_id, sample=0)
    train.train(
        str(out / "data" / point.data_id),
        "gpt2-1-1",
        2,
        out / "runs" / point.id,
        batch=2,
        device="cpu",
        stop_after=1,
    )
    rows = sweep.run_sweep(config, out)
    assert rows[0]["status"] == "done"
    assert "--resume" in (out / "logs" / f"{point.id}.log").read_text()


def test_a_report_of_earlier_weights_is_evaluated_again(tmp_path):
    """A point evaluated by hand mid-training: the sweep resumes it and evaluates it
    again; its row holds the final weights' R, never the stale one."""
    config = write(tmp_path, {**GRID, "models": ["gpt2-1-1"]})
    point = sweep.points(sweep.load_config(config))[0]
    out = tmp_path / "s"
    (out / "data").mkdir(parents=True)
    from bioknow.base import ownership
    from bioknow.data import dataset
    from bioknow.measure import evaluate
    from bioknow.training import runfolder

    ownership.write_marker(out, "sweep")  # a sweep that stopped after its first point

    dataset.generate("bioS-simple", 30, 0, out / "data" / point.data_id, sample=0)
    run = out / "runs" / point.id
    train.train(str(out / "data" / point.data_id), "gpt2-1-1", 2, run, device="cpu", stop_after=3)
    early = evaluate.evaluate_run(run, device="cpu")
    rows = sweep.run_sweep(config, out)
    report = integrity.read_run_json(run, "eval.json")
    assert report["weights"] == runfolder.weights_digest(run) != early["weights"]
    assert report["step"] == rows[0]["steps"] and report["R"] != early["R"]
    assert rows[0]["status"] == "done" and rows[0]["R"] == report["R"]
    assert rows[0]["weights_sha256"] == report["weights"]["sha256"]
    assert rows[0]["final_loss"] == runfolder.read_state(run)["final_loss"] is not None


def results_table(sweep_dir, out):
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "scripts" / "results-table.py"
    return subprocess.run(
        [sys.executable, str(script), str(sweep_dir), str(out)], capture_output=True, text=True
    )


def test_the_results_table_refuses_a_stale_report(done, tmp_path):
    done_table = results_table(done / "s", tmp_path / "table.csv")
    assert done_table.returncode == 0, done_table.stderr
    assert len((tmp_path / "table.csv").read_text().splitlines()) == 3
    sweep_dir = tmp_path / "s"
    shutil.copytree(done / "s", sweep_dir)
    csv = (sweep_dir / "runs.csv").read_text()
    sha = integrity.read_run_json(next((sweep_dir / "runs").iterdir()), "eval.json")
    (sweep_dir / "runs.csv").write_text(csv.replace(sha["weights"]["sha256"], "0" * 64))
    stale = results_table(sweep_dir, tmp_path / "stale.csv")
    assert stale.returncode == 2 and len(stale.stderr.strip().splitlines()) == 1, stale.stderr
    assert "stale" in stale.stderr and not (tmp_path / "stale.csv").exists()


def test_failed_points_are_retried_once_then_reported(tmp_path):
    # a prefix the tokenizer already has: train refuses it once it has read the dataset
    train_options = {"device": "cpu", "useful_prefix": "<|endoftext|>"}
    config = write(tmp_path, {**GRID, "models": ["gpt2-1-1"], "train": train_options})
    rows = sweep.run_sweep(config, tmp_path / "s")
    assert rows[0]["status"] == "failed" and "train exited with status 2" in rows[0]["error"]
    log = (tmp_path / "s" / "logs" / f"{rows[0]['point']}.log").read_text()
    assert log.count("$ ") == sweep.ATTEMPTS


@pytest.mark.parametrize(
    "change, message",
    [
        ({"models": ["gpt9-1-1"]}, "gpt2-L-H"),
        ({"colour": "red"}, "unknown key"),
        ({"datasets": [{"variant": "bioS", "n": 10, "size": 3}]}, "unknown key"),
        ({"recipe": {"momentum": 0.9}}, "unknown key"),
        ({"models": ["gpt2-1-1", "gpt2-1-1"]}, "repeats a point"),
    ],
)
def test_bad_configs(tmp_path, change, message):
    with pytest.raises(InputError, match=message):
        sweep.points({**GRID, **change}) if "colour" not in change else sweep.load_config(
            write(tmp_path, {**GRID, **change})
        )


def test_another_config_in_the_same_folder_is_refused(done, tmp_path):
    other = write(tmp_path, {**GRID, "exposures": 3})
    with pytest.raises(InputError, match="another config"):
        sweep.run_sweep(other, done / "s")


def test_plot_kinds_match_the_cli():
    from bioknow.study import plot

    kinds = cli.build_parser()._subparsers._group_actions[0].choices["plot"]
    choices = next(a.choices for a in kinds._actions if a.dest == "kind")
    assert tuple(choices) == (*plot.KINDS, "memorization")  # bioknow.study.plot_memorization


CAPACITY = Path(__file__).resolve().parent.parent / "scripts" / "capacity-cpu.yaml"
# what docs/results/capacity-cpu.csv promises for every run
CAPACITY_COLUMNS = [
    "variant", "k", "c", "d", "l", "t", "n", "exposures", "model", "P", "bits", "bits_max",
    "R", "R_max", "R_ci95_low", "R_ci95_high", "accuracy", "steps", "tokens", "wall_s",
]  # fmt: skip


@pytest.mark.slow
def test_the_capacity_grid_runs_shortened(tmp_path, monkeypatch, capsys):
    """scripts/capacity-cpu.yaml with 30 people and 3 and 1 exposures (people sampled, so
    the interval columns appear), through sweep, plot and fit; the sweep and its runs'
    logs show progress lines."""
    monkeypatch.setenv("BIOKNOW_PROGRESS_SECONDS", "0")
    grid = yaml.safe_load(CAPACITY.read_text())
    grid["datasets"][0]["n"] = 30
    grid.update(exposures=[3, 1], models=grid["models"][:2], eval={"people": 20})
    config = write(tmp_path, grid)
    out = tmp_path / "s"
    assert cli.main(["sweep", str(config), "--out", str(out), "--cpu-slots", "2"]) == 0
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("sweep: ")]
    assert lines and "running" in lines[0] and lines[-1].startswith("sweep: 4 of 4 points")
    for log in (out / "logs").iterdir():
        assert "train: " in log.read_text() and "eval: " in log.read_text()
    assert cli.main(["plot", str(out), "--out", str(tmp_path / "capacity.png")]) == 0
    assert cli.main(["fit", str(out)]) == 0
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(out / "runs.csv")
    assert set(CAPACITY_COLUMNS) <= set(table.column_names)
    rows = table.to_pylist()
    assert len(rows) == 4 and {r["variant"] for r in rows} == {"bioD"}
    assert all(r["R_ci95_low"] <= r["R_ci95_high"] and 0 <= r["accuracy"] <= 1 for r in rows)
    assert {(r["report"], r["people"]) for r in rows} == {("eval-people20-seed0.json", 20)}
    for run in (out / "runs").iterdir():  # the sample's report; no full evaluation made
        assert (run / "eval-people20-seed0.json").is_file() and not (run / "eval.json").exists()
    assert (out / "fit.json").is_file() and (tmp_path / "capacity.png").stat().st_size > 0


def test_status_of_a_local_sweep(done, capsys):
    assert cli.main(["sweep", str(done / "s"), "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{done / 's'}: 2 points: 2 done"
    assert all(line.split()[:2] == ["done", "-"] for line in lines[1:])


def test_a_point_of_several_ranks_trains_under_torchrun(tmp_path):
    """gpus_per_point: 2 runs train under torchrun, with DDP (on the CPU: two processes,
    gloo); the evaluation runs once."""
    config = write(tmp_path, {**GRID, "models": ["gpt2-1-1"], "gpus_per_point": 2})
    point = sweep.points(sweep.load_config(config))[0]
    train_cmd, eval_cmd = sweep.commands(point, tmp_path / "s", sweep.load_config(config))
    assert train_cmd[1:5] == [
        "-m",
        "bioknow.training.torchrun",
        "--standalone",
        "--nproc_per_node=2",
    ]
    assert eval_cmd[1:4] == ["-m", "bioknow", "eval"]
    rows = sweep.run_sweep(config, tmp_path / "s", device="cpu")
    assert rows[0]["status"] == "done", rows[0]["error"]
    run_config = json.loads((tmp_path / "s" / "runs" / point.id / "config.json").read_text())
    assert run_config["world_size"] == 2


def test_slots_group_the_gpus_of_a_point(monkeypatch):
    """Slots name the GPUs this process was given (a Slurm job's), gpus_per_point at a time."""
    monkeypatch.setattr(sweep, "visible_gpus", lambda: ["4", "5", "6", "7", "9"])
    envs = sweep.slots("cuda", per_gpu=2, gpus_per_point=2)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["4,5", "4,5", "6,7", "6,7"]
    with pytest.raises(InputError, match="gpus_per_point is 8"):
        sweep.slots("cuda", per_gpu=1, gpus_per_point=8)


def test_a_huge_grid_is_counted_and_refused_before_it_is_expanded(tmp_path, monkeypatch, capsys):
    """About 16 million points: refused at once with the count, nothing written, no
    point expanded or checked; --max-points raises the limit, and the expansion of a
    big grid shows its progress."""
    huge = {
        **GRID,
        "models": ["gpt2-1-1"] * 16,
        "exposures": list(range(1, 101)),
        "seeds": list(range(100)),
        "recipe": {"lr": [1e-3] * 10, "wd": [0.01] * 10, "warmup": list(range(100))},
    }  # 16 x 100 x 100 x 10,000 = 1.6e9 points
    config = write(tmp_path, huge)
    monkeypatch.setattr(sweep, "check_config", lambda c: pytest.fail("expanded"))
    status, _, err = run_cli("sweep", config, "--out", tmp_path / "s")
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert "1,600,000,000 points" in err and "--max-points" in err
    assert not (tmp_path / "s").exists()
    monkeypatch.undo()
    datasets = [{"variant": "bioS-simple", "n": [30, 40]}, {"variant": "bioS", "n": 30}]
    small = {**GRID, "datasets": datasets, "seeds": [0, 1], "recipe": {"lr": [1e-3, 2e-3]}}
    assert grid_size.count_points(small) == len(sweep.points(small)) == 3 * 2 * 2 * 2
    big = {**GRID, "models": ["gpt2-1-1"], "seeds": list(range(30))}
    monkeypatch.setattr(grid_size, "MAX_POINTS", 10)
    monkeypatch.setattr(sweep, "MAX_POINTS", 10)
    status, _, err = run_cli("sweep", write(tmp_path, big), "--out", tmp_path / "s")
    assert status == 2 and "30 points, more than the limit of 10" in err
    monkeypatch.setenv("BIOKNOW_PROGRESS_SECONDS", "0")
    assert len(sweep.points(big, progress=True)) == 30
    assert "grid: 30 of 30 points (100.0%)" in capsys.readouterr().err


def test_status_follows_what_the_sweep_is_doing(done, tmp_path, monkeypatch):
    """A point the sweep is working on is running, also between its commands (trained, not
    yet evaluated) and before its training has written anything; once the sweep has
    stopped, a started point is interrupted, not waiting."""
    sweep_dir = tmp_path / "s"
    shutil.copytree(done / "s", sweep_dir)
    record = json.loads((sweep_dir / "sweep.json").read_text())
    record["config"]["quantize"] = ["none", "int8"]  # trained and evaluated, not yet quantized
    (sweep_dir / "sweep.json").write_text(json.dumps(record))
    grid, config = sweep.points(record["config"]), sweep.check_config(record["config"])
    shutil.rmtree(sweep_dir / "runs" / grid[1].id)  # its training about to start
    (sweep_dir / "logs" / f"{grid[1].id}.log").unlink()
    go = tmp_path / "go"
    wait = f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.05)"
    monkeypatch.setattr(sweep, "commands", lambda *a: [[sys.executable, "-c", wait]])

    def states():
        return [s["state"] for s in slurm.status(sweep_dir)]

    assert states() == ["interrupted", "waiting"]
    workers = [
        threading.Thread(target=sweep.run_point, args=(p, sweep_dir, config, {})) for p in grid
    ]
    for worker in workers:  # commands that hold no run lock, as an eval that is starting
        worker.start()
    try:
        deadline = time.monotonic() + 30
        while states() != ["running", "running"]:
            assert time.monotonic() < deadline, states()
            time.sleep(0.05)
    finally:
        go.touch()
        for worker in workers:
            worker.join()
    assert states() == ["interrupted", "interrupted"]
