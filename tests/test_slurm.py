"""`bioknow sweep --launcher slurm` against a real Slurm: a single-node cluster started on
this machine (tests/slurm_cluster.py). Two points run as a job array; one job is stopped
with SIGTERM (as a preemption stops it) and resumes when the sweep runs again, the other
gets the warning Slurm sends before a time limit, checkpoints and is requeued; the
results equal a local sweep's, bit for bit.

Run by `make test-slurm` (and CI), not by `make test`: it takes about two minutes.
Skipped where Slurm is missing and cannot be installed, or without root (slurmd).
"""

import json
import os
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import run_cli
from slurm_cluster import Cluster, install

pytestmark = pytest.mark.slurm

# two points (train seeds 0 and 1) of a tiny model on a tiny bioD, long enough (about
# 800 steps) to be signalled mid-run; one thread each, here and in the jobs
GRID = {
    "datasets": [{"variant": "bioD", "n": 24, "k": 2, "c": 1, "d": 10, "l": 1, "t": 20}],
    "models": ["gpt2-1-1"],
    "exposures": 600,
    "seeds": [0, 1],
    "recipe": {"batch": 1},
    "train": {"device": "cpu", "no_compile": True, "log_every": 10, "checkpoint_every": 10**6},
}
GRID["datasets"][0]["vocab_size"] = 320
SLURM = ["--launcher", "slurm", "--time", "30", "--cpus-per-job", "1"]
# what differs between two runs of the same point: time, and paths (the run, its config)
UNEQUAL = {"wall_s", "tokens_per_s", "config", "run", "status", "error"}


def unavailable(why: str) -> None:
    """Skip, or fail where CI says Slurm must be tested (BIOKNOW_REQUIRE_SLURM=1)."""
    if os.environ.get("BIOKNOW_REQUIRE_SLURM") == "1":
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        unavailable("a single-node Slurm cluster needs root (slurmd runs jobs as root here)")
    why = install()
    if why:
        unavailable(why)
    with Cluster(tmp_path_factory.mktemp("cluster")) as env:
        yield env


def slurm(env, *cmd) -> str:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)}: {done.stderr}"
    return done.stdout


def step(run: Path) -> int:
    """The step of a run's last metrics line (0 before any)."""
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (OSError, ValueError):
        return 0


def until(condition, what: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.1)


def status(out) -> dict:
    code, text, err = run_cli("sweep", out, "--status", "--json")
    assert code == 0, err
    return {s["point"]: s for s in json.loads(text)}


def table(out) -> dict:
    return {r["point"]: r for r in pq.read_table(out / "runs.parquet").to_pylist()}


def losses(run: Path) -> list:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [(x["step"], x["loss"]) for x in map(json.loads, lines)]


def test_a_sweep_on_slurm_equals_a_local_one(cluster, tmp_path, monkeypatch):
    started = time.monotonic()
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(GRID))
    local, out = tmp_path / "local", tmp_path / "slurm"
    monkeypatch.setenv("SLURM_CONF", cluster["SLURM_CONF"])
    monkeypatch.setenv("BIOKNOW_SLURM_POLL_SECONDS", "0.5")

    code, text, err = run_cli("sweep", config, "--out", out, *SLURM, "--no-wait")
    assert code == 0, err
    assert "--status" in text
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())
    stopped, warned = sorted(jobs)  # seeds 0 and 1
    script = next((out / "slurm" / "submitit").glob("*_submission.sh")).read_text()
    assert "#SBATCH --signal=USR2@90" in script and "#SBATCH --cpus-per-task=1" in script
    assert "#SBATCH --array=0-1%2" in script and "#SBATCH --time=30" in script

    runs = {p: out / "runs" / p for p in jobs}
    until(lambda: all(step(r) >= 100 for r in runs.values()), "both jobs to train 100 steps")
    assert {s["state"] for s in status(out).values()} == {"running"}
    slurm(cluster, "scancel", "--signal=TERM", jobs[stopped])  # as a preemption does
    slurm(cluster, "scancel", "--signal=USR2", jobs[warned])  # the warning before a limit

    until(lambda: status(out)[stopped]["state"] == "interrupted", "the stopped point")
    total = json.loads((runs[stopped] / "config.json").read_text())["steps"]
    assert 100 <= step(runs[stopped]) < total  # stopped mid-run, with a checkpoint
    assert list((runs[stopped] / "checkpoints").iterdir())

    # the reference, meanwhile, on this machine: the same grid, one thread a point
    code, _, err = run_cli("sweep", config, "--out", local, "--cpu-slots", "2")
    assert code == 0, err

    code, text, err = run_cli("sweep", config, "--out", out, *SLURM)
    assert code == 0, err + text
    assert set(status(out)[p]["state"] for p in jobs) == {"done"}
    after = json.loads((out / "slurm" / "jobs.json").read_text())
    assert after[warned] == jobs[warned]  # requeued by submitit, not submitted again
    assert after[stopped] != jobs[stopped]  # submitted again by the second run

    for point in jobs:  # both resumed from a checkpoint, neither started over
        log = (out / "logs" / f"{point}.log").read_text()
        ran = [line for line in log.splitlines() if line.startswith("$ ")]
        trains = [line.split(" train ")[1].split()[0] for line in ran if " train " in line]
        assert trains[0] == "--data" and set(trains[1:]) == {"--resume"}, log
        assert losses(runs[point]) == losses(local / "runs" / point)
        weights = "model.safetensors"
        assert (runs[point] / weights).read_bytes() == (
            local / "runs" / point / weights
        ).read_bytes()
    submitit_log = (out / "slurm" / "submitit" / f"{jobs[warned]}_0_log.out").read_text()
    assert "Requeued job" in submitit_log

    mine, theirs = table(out), table(local)
    assert mine.keys() == theirs.keys() == set(jobs)
    for point, row in mine.items():
        assert row["status"] == "done" and row["R"] > -1e9 and row["steps"] == total
        same = {k: v for k, v in row.items() if k not in UNEQUAL}
        assert same == {k: v for k, v in theirs[point].items() if k not in UNEQUAL}
    print(f"slurm test: {time.monotonic() - started:.0f} s with a running cluster")
