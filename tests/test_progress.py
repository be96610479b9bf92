"""Progress off a terminal: plain lines with the figures, time taken and the time left."""

import json
import subprocess
import sys

from bioknow.base.progress import Progress, minutes
from bioknow.data import dataset


def test_lines_say_how_far_and_how_long(monkeypatch, capsys):
    monkeypatch.setenv("BIOKNOW_PROGRESS_SECONDS", "0")
    with Progress(200, "train", "step", initial=50) as bar:
        bar.set_postfix(**{"loss": "2.2513", "tokens/s": "33,012"})
        bar.update(10)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("train: 60 of 200 steps (30.0%), loss 2.2513, tokens/s 33,012, ")
    assert "ETA" in lines[0]
    assert lines[-1].startswith("train: 60 of 200 steps")  # the closing line


def test_an_eta_by_share_of_the_work(monkeypatch, capsys):
    """Units of different sizes (a sweep's points): the ETA follows the share of work."""
    monkeypatch.setenv("BIOKNOW_PROGRESS_SECONDS", "0")
    done = [0.0]
    bar = Progress(4, "sweep", "point", share=lambda: done[0])
    done[0] = 0.5
    bar.tick()
    line = capsys.readouterr().err.strip()
    assert line.startswith("sweep: 0 of 4 points (0.0%)") and "ETA" in line


def test_quiet_when_disabled_or_quick(monkeypatch, capsys):
    with Progress(10, "x", "thing", enabled=False) as bar:
        bar.update(10)
    monkeypatch.setenv("BIOKNOW_PROGRESS_SECONDS", "3600")
    with Progress(10, "x", "thing") as bar:
        bar.update(10)
    assert capsys.readouterr().err == ""


def test_minutes():
    assert (minutes(30), minutes(600), minutes(7200)) == ("30 s", "10.0 min", "2.0 h")


def test_train_under_a_pipe_prints_progress_and_appends_metrics(tmp_path):
    dataset.generate("bioS-simple", 30, 0, tmp_path / "data", sample=0)
    env = {"BIOKNOW_PROGRESS_SECONDS": "0", "PATH": "/usr/bin:/bin"}
    out = tmp_path / "run"
    args = ["--data", tmp_path / "data", "--model", "gpt2-1-1", "--exposures", "4"]
    args += ["--batch", "1", "--device", "cpu", "--log-every", "2", "--out", out]
    done = subprocess.run(
        [sys.executable, "-m", "bioknow", "train", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    progress = [x for x in done.stderr.splitlines() if x.startswith("train: ")]
    steps = json.loads((out / "config.json").read_text())["steps"]
    assert len(progress) >= steps - 1 and "loss" in progress[-1] and "tokens/s" in progress[-1]
    assert f"of {steps:,} steps" in progress[0] and "ETA" in progress[0]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [*range(2, steps, 2), steps][: len(lines)]


def test_each_line_under_a_pipe_shows_the_figures_since_the_previous_one(tmp_path):
    """Metrics lines only at the end (log_every above the steps) and a progress line at
    every step: each line's loss is the loss of its own step, as a run logging every step
    records it, never a figure repeated from an earlier line."""
    dataset.generate("bioS-simple", 30, 0, tmp_path / "data", sample=0)
    env = {"BIOKNOW_PROGRESS_SECONDS": "0", "PATH": "/usr/bin:/bin"}
    base = ["--data", tmp_path / "data", "--model", "gpt2-1-1", "--exposures", "3"]
    base += ["--batch", "1", "--device", "cpu"]

    def train(out, log_every):
        args = [*base, "--log-every", log_every, "--out", tmp_path / out]
        cmd = [sys.executable, "-m", "bioknow", "train", *map(str, args)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        return [x for x in done.stderr.splitlines() if x.startswith("train: ")]

    train("every", 1)
    metrics = (tmp_path / "every" / "metrics.jsonl").read_text().splitlines()
    losses = {json.loads(x)["step"]: f"{json.loads(x)['loss']:.4f}" for x in metrics}
    lines = train("once", 1000)[:-1]  # the closing line repeats the last step's
    assert len(lines) == len(losses) > 3
    for line in lines:
        step = int(line.split()[1].replace(",", ""))
        assert f", loss {losses[step]}, tokens/s " in line, line


def test_a_long_cpu_run_says_how_long_up_front(tiny, tmp_path, monkeypatch, capsys):
    """Once a short measured rate says the run will be long, train says about how long
    and how to make a first try quicker; a short run says nothing of it."""
    import bioknow
    from bioknow.base import progress

    args = dict(batch=1, device="cpu", log_every=100, progress=True)
    monkeypatch.setattr(progress, "MEASURED_SECONDS", 0.0)
    monkeypatch.setattr(progress, "MEASURED_STEPS", 2)
    bioknow.train_run(tiny / "data", "gpt2-1-1", 4, tmp_path / "short", **args)
    assert "bioknow: note: about" not in capsys.readouterr().err
    monkeypatch.setattr(progress, "LONG_RUN", 0.0)  # any run is long
    bioknow.train_run(tiny / "data", "gpt2-1-1", 4, tmp_path / "long", **args)
    notes = [x for x in capsys.readouterr().err.splitlines() if x.startswith("bioknow: note:")]
    assert len(notes) == 1 and "steps/s on this CPU" in notes[0]
    assert "fewer --exposures or a smaller --model" in notes[0]
