"""Experiment tracking: TensorBoard event files and W&B runs (offline), resumed without
duplicate steps, with the eval report; the sweep passes the tracker on."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from bioknow.base.errors import InputError
from bioknow.data import dataset
from bioknow.measure import evaluate
from bioknow.study import sweep
from bioknow.training import runfolder, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("track") / "d"
    dataset.generate("bioS-simple", 30, 1, root, sample=0, vocab_size=320)
    return root


def train_run(data, out, **kw):
    """A 1-layer model, a metrics line every step (about 15 steps)."""
    options = dict(batch=1, device="cpu", log_every=1, checkpoint_every=10, compile=False)
    return train.train(str(data), "gpt2-1-2", 1, out, **options, **kw)


def stop_resume_and_eval(data, run, tracker: str) -> tuple[list[dict], dict]:
    """Train to step 6, resume to the end, evaluate; the metrics lines (checked to be one
    a step) and the report."""
    assert train_run(data, run, tracker=tracker, stop_after=6)["step"] == 6
    if tracker == "tensorboard":  # what a process killed after step 6's checkpoint logged
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(run / "tensorboard")) as stale:
            for step in (7, 8, 9):
                stale.add_scalar("train/loss", 99.0, step)
    state = train.train(None, None, None, run, resume=True, device="cpu")
    assert state["finished"] and state["step"] > 9
    report = evaluate.evaluate_run(run, device="cpu")
    metrics = runfolder.read_metrics(run)
    assert [m["step"] for m in metrics] == list(range(1, state["step"] + 1))
    return metrics, report


def test_tensorboard(data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    metrics, report = stop_resume_and_eval(data, run, "tensorboard")
    config = runfolder.read_config(run)
    assert config["tracker"] == {"kind": "tensorboard", "dir": "tensorboard"}
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == [m["step"] for m in metrics]
    assert [e.value for e in losses] == [float(np.float32(m["loss"])) for m in metrics]
    for key in ("lr", "tokens", "tokens_per_s"):
        values = [e.value for e in events.Scalars(f"train/{key}")]
        assert values == [float(np.float32(m[key])) for m in metrics]
    (r,) = events.Scalars("eval/R")
    assert r.step == len(metrics) and r.value == float(np.float32(report["R"]))
    accuracy = evaluate.mean_accuracy(report["attributes"])
    assert events.Scalars("eval/accuracy")[0].value == float(np.float32(accuracy))
    employer = events.Scalars("eval/attributes/employer/bits")[0].value
    assert employer == float(np.float32(report["attributes"]["employer"]["bits"]))
    assert "config/text_summary" in events.Tags()["tensors"]


def wandb_records(path: Path) -> list[dict]:
    """The records of an offline W&B run file, by wandb's own reader."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "wandb"), "leet", "inspect", "--json", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"this wandb cannot print its run files ({done.stderr.strip()[:80]})")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_wandb_offline(data, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the optional wandb extra is not installed")
    if shutil.which("wandb", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("no wandb command beside this Python")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_RUN_GROUP", "grid")
    monkeypatch.setenv("WANDB_PROJECT", "bioknow-test")
    run = tmp_path / "run"
    metrics, report = stop_resume_and_eval(data, run, "wandb")
    tracker = runfolder.read_config(run)["tracker"]
    assert tracker["kind"] == "wandb" and tracker["group"] == "grid" and tracker["name"] == "run"
    files = sorted((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 3  # train, resume, eval: one W&B run
    records = [wandb_records(f) for f in files]
    steps, losses, summary = [], [], {}
    for part in records:
        (start,) = [r["run"] for r in part if r["type"] == "run"]
        assert (start["run_id"], start["project"]) == (tracker["id"], "bioknow-test")
        assert (start["run_group"], start["display_name"]) == ("grid", "run")
        for r in part:
            if r["type"] == "history":
                steps.append(r["history"]["step"]["num"])
                losses.append(r["history"]["item"]["train/loss"])
            elif r["type"] == "summary":
                summary.update(r["summary"]["update"])
    first = [r["run"] for r in records[0] if r["type"] == "run"][0]
    assert first["config"]["update"]["model"]["name"] == "gpt2-1-2"
    assert steps == [m["step"] for m in metrics]
    assert losses == pytest.approx([m["loss"] for m in metrics], rel=1e-12)
    assert math.isclose(summary["eval/R"], report["R"], rel_tol=1e-12)
    assert summary["eval/accuracy"] == evaluate.mean_accuracy(report["attributes"])


def test_the_tracker_is_checked_and_part_of_the_run(data, tmp_path):
    with pytest.raises(InputError, match="tracker must be one of none, tensorboard, wandb"):
        train_run(data, tmp_path / "r", tracker="mlflow")
    assert not (tmp_path / "r").exists()
    train_run(data, tmp_path / "r", stop_after=1)
    assert runfolder.read_config(tmp_path / "r")["tracker"] is None
    with pytest.raises(InputError, match="takes none of --tracker"):
        train.train(None, None, None, tmp_path / "r", resume=True, tracker="tensorboard")


GRID = {"datasets": [{"variant": "bioS-simple", "n": 30}], "models": ["gpt2-1-1"]}


@pytest.mark.parametrize(
    "extra, tracker",
    [
        ({"tracker": "wandb"}, "wandb"),
        ({"train": {"tracker": "tensorboard"}}, "tensorboard"),
        ({"tracker": "tensorboard", "train": {"tracker": "tensorboard"}}, "tensorboard"),
    ],
)
def test_a_sweep_passes_the_tracker_on(tmp_path, extra, tracker):
    config = sweep.check_config({**GRID, "exposures": 2, **extra})
    (point,) = sweep.points({**GRID, "exposures": 2, **extra})
    (train_command, _) = sweep.commands(point, tmp_path, config)
    assert train_command[train_command.index("--tracker") + 1] == tracker
    group = sweep.tracker_env(config, tmp_path / "my-sweep")
    assert group == ({"WANDB_RUN_GROUP": "my-sweep"} if tracker == "wandb" else {})


def test_a_sweep_refuses_two_trackers(tmp_path):
    path = tmp_path / "grid.yaml"
    config = {**GRID, "exposures": 2, "tracker": "wandb", "train": {"tracker": "tensorboard"}}
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(InputError, match="tracker and train.tracker differ"):
        sweep.run_sweep(path, tmp_path / "s")
    assert not (tmp_path / "s").exists()
