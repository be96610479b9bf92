"""Fault windows, forced deterministically: a rename or a record that 'kills' the process
(raises an exception nothing catches) at a chosen point, then recovery. Also the run
lock, children dying with the sweep, and losses or reports that are not finite."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import TINY_DATA, TINY_TRAIN, copy_tiny, run_cli, tree_bytes
from safetensors.torch import load_file, save_file

from bioknow.base import atomic, integrity, process
from bioknow.base.errors import InputError
from bioknow.data import dataset
from bioknow.training import runfolder, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Killed(BaseException):
    """What a kill leaves: the process stops here, no handler runs."""


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def kill_at_rename(monkeypatch, name_of_target: str, nth: int = 1):
    """Make the nth os.replace onto a path named `name_of_target` (a prefix) raise."""
    real, seen = os.replace, []

    def replace(src, dst, *args, **kwargs):
        if os.path.basename(dst).startswith(name_of_target):
            seen.append(dst)
            if len(seen) == nth:
                raise Killed
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def kill_at_record(monkeypatch, holding: str, removing: bool = False):
    """Make the first integrity.json update that adds (or with `removing`, drops) a path
    containing `holding` raise before it writes."""
    real = integrity.update_record

    def update(run, add=None, remove=()):
        if any(holding in rel for rel in (remove if removing else add or {})):
            raise Killed
        return real(run, add, remove)

    monkeypatch.setattr(integrity, "update_record", update)


# generate --overwrite: three renames, killed at each


BIOD = dict(biod=dict(k=2, c=1, d=10, l=1, t=20), vocab_size=320)  # quick to make and open


def make(seed, out, **kwargs):
    return dataset.generate("bioD", 5, seed, out, sample=2, **BIOD, **kwargs)


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("two")
    for seed in (1, 2):
        make(seed, root / f"s{seed}")
    return root


@pytest.mark.parametrize(
    "target, outcome",
    [(".d.ready-", "old"), (".d.old-", "new"), ("d", "new")],
    ids=["before-ready", "before-moving-the-old", "before-the-last-rename"],
)
def test_generate_overwrite_killed_between_renames(
    two_datasets, tmp_path, monkeypatch, target, outcome
):
    out = tmp_path / "d"
    import shutil

    shutil.copytree(two_datasets / "s1", out)
    with monkeypatch.context() as m:
        kill_at_rename(m, target)
        with pytest.raises(Killed):
            make(2, out, overwrite=True)
    assert any(p.name.startswith(".d.") for p in tmp_path.iterdir())
    status, _, err = run_cli("info", out)  # info finds the leftovers and recovers
    assert status == 0, err
    expected = two_datasets / ("s1" if outcome == "old" else "s2")
    assert tree_bytes(out) == tree_bytes(expected)
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_builds_of_dead_processes_are_removed(two_datasets, tmp_path):
    """A killed generate leaves .NAME.partial-PID; the next one removes it (a live
    process's build is left alone). So does a corpus, with its shard temporaries."""
    dead, live = dead_pid(), os.getppid()
    for pid in (dead, live):
        (tmp_path / f".d.partial-{pid}").mkdir()
        (tmp_path / f".d.partial-{pid}" / "population.parquet").write_bytes(b"x" * 1000)
    assert make(2, tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".d.partial-{live}", "d"]

    from bioknow.data import corpus

    ds = dataset.open_dataset(two_datasets / "s1")
    corpus.write_corpus(ds, 2, tmp_path / "whole", shard_windows=1)
    real, calls = atomic.write_bytes, []

    def dying(path, data):
        calls.append(path)
        if len(calls) == 3:
            raise Killed
        real(path, data)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(corpus.atomic, "write_bytes", dying)
        with pytest.raises(Killed):
            corpus.write_corpus(ds, 2, tmp_path / "c", shard_windows=1)
    stale = tmp_path / "c" / f".label_kinds-00001.bin.partial-{dead}"
    stale.write_bytes(b"\0" * 100)
    corpus.write_corpus(ds, 2, tmp_path / "c", shard_windows=1)
    assert tree_bytes(tmp_path / "c") == tree_bytes(tmp_path / "whole")


# train: a checkpoint and the finishing step, killed at each step


def uninterrupted(tiny):
    run = tiny / "run"
    return load_file(str(run / "model.safetensors")), runfolder.read_state(run)


def metrics_without_timing(run):
    return [
        {k: v for k, v in m.items() if k not in ("tokens_per_s", "elapsed_s")}
        for m in runfolder.read_metrics(run)
    ]


TRAIN = dict(batch=1, device="cpu", log_every=2, checkpoint_every=5)  # as TINY_TRAIN


@pytest.mark.parametrize(
    "kill",
    [
        ("rename", "step-", 2),  # the second checkpoint's folder, not yet renamed
        ("record", "checkpoints/step-00000010", 0),  # renamed, not yet recorded
        ("drop", "checkpoints/step-00000005", 0),  # both recorded, the older not yet dropped
        ("rename", "model.safetensors", 1),  # the final copy, not yet renamed
        ("record", "model.safetensors", 0),  # renamed, not yet recorded
    ],
    ids=[
        "checkpoint-rename",
        "checkpoint-record",
        "checkpoint-drop",
        "final-rename",
        "final-record",
    ],
)
def test_training_killed_anywhere_resumes_to_the_same_run(
    tiny, tmp_path, monkeypatch, request, kill
):
    pair = copy_tiny(tiny, tmp_path / "pair")
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        if kill[0] == "rename":
            kill_at_rename(m, kill[1], kill[2])
        else:
            kill_at_record(m, kill[1], removing=kill[0] == "drop")
        with pytest.raises(Killed):
            train.train(str(pair / "data"), "gpt2-1-1", 10, out, **TRAIN)
    assert not (out / "lock").exists() or not process.alive(int((out / "lock").read_text()))
    status, _, err = run_cli("train", "--resume", "--out", out)
    assert status == 0, err
    weights, state = uninterrupted(tiny)
    mine = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(weights[k], mine[k]) for k in weights)
    assert runfolder.read_state(out)["loss"] == state["loss"]
    assert metrics_without_timing(out) == metrics_without_timing(tiny / "run")
    assert run_cli("info", out, "--verify")[0] == 0
    if "final" in request.node.callspec.id:  # a finished run exports (it never could before)
        assert run_cli("export", out, "--out", tmp_path / "hf")[0] == 0


def test_stopped_and_resumed_equals_uninterrupted(tiny, tmp_path):
    """The cadence is stored in config.json: a resume logs and averages as the first
    invocation did, and metrics.jsonl holds the same lines."""
    pair = copy_tiny(tiny, tmp_path / "pair")
    out = tmp_path / "run"
    train.train(str(pair / "data"), "gpt2-1-1", 10, out, stop_after=7, **TRAIN)
    config = runfolder.read_config(out)
    assert (config["log_every"], config["checkpoint_every"]) == (2, 5)
    assert runfolder.read_state(out)["step"] == 7
    with (out / "metrics.jsonl").open("ab") as f:
        f.write(b'{"step": 99, "lo')  # a torn last line
    whole = metrics_without_timing(tiny / "run")
    assert metrics_without_timing(out) == [m for m in whole if m["step"] <= 7]
    done = train.train(None, None, None, out, device="cpu", resume=True)
    assert done["finished"] and done["loss"] == uninterrupted(tiny)[1]["loss"]
    assert metrics_without_timing(out) == metrics_without_timing(tiny / "run")


def test_a_torn_line_inside_metrics_is_named(tiny, tmp_path):
    pair = copy_tiny(tiny, tmp_path / "pair")
    path = pair / "run" / "metrics.jsonl"
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([lines[0][:10], *lines[1:]]))
    status, _, err = run_cli("info", pair / "run", "--verify")
    assert status == 2 and "metrics.jsonl" in err


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny, tmp_path, monkeypatch):
    pair = copy_tiny(tiny, tmp_path / "pair")
    real = train.optimizer_step

    def poisoned(model, opt, x, y, lr, *args, **kwargs):  # a fault at step 7: a weight goes nan
        if opt.state and next(iter(opt.state.values()))["step"] == 6:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return real(model, opt, x, y, lr, *args, **kwargs)

    monkeypatch.setattr(train, "optimizer_step", poisoned)
    status, _, err = run_cli(
        "train", "--data", pair / "data", *TINY_TRAIN, "--out", tmp_path / "run"
    )
    errors = [line for line in err.splitlines() if line.startswith("bioknow: error")]
    assert status == 2 and len(errors) == 1  # after the run's opening lines
    assert "nan at step 8" in errors[0] and "step-00000005" in errors[0]
    assert train.latest_checkpoint(tmp_path / "run").name == "step-00000005"
    assert not (tmp_path / "run" / "model.safetensors").exists()
    assert run_cli("info", tmp_path / "run", "--verify")[0] == 0


def test_eval_refuses_a_report_that_is_not_finite(tiny, tmp_path):
    run = copy_tiny(tiny, tmp_path / "pair") / "run"
    weights = load_file(str(run / "model.safetensors"))
    weights["norm.weight"] = torch.full_like(weights["norm.weight"], float("inf"))
    save_file(weights, str(run / "model.safetensors"))  # as a diverged model would be
    integrity.update_record(run, {"model.safetensors": integrity.digest(run / "model.safetensors")})
    before = (run / "eval.json").read_bytes()
    status, _, err = run_cli("eval", run, "--device", "cpu")
    assert status == 2 and "not finite" in err and len(err.strip().splitlines()) == 1
    assert (run / "eval.json").read_bytes() == before


def test_eval_refuses_another_dataset_at_the_same_path(tiny, tmp_path):
    pair = copy_tiny(tiny, tmp_path / "pair")
    assert run_cli(*TINY_DATA, "--seed", 1, "--out", pair / "data", "--overwrite")[0] == 0
    for command in (["eval", pair / "run"], ["train", "--resume", "--out", pair / "run"]):
        status, _, err = run_cli(*command)
        assert status == 2 and "not the dataset this run was trained on" in err


# the run lock


def test_a_run_has_one_writer(tiny, tmp_path):
    run = copy_tiny(tiny, tmp_path / "pair") / "run"
    with process.RunLock(run):
        for command in (["eval", run, "--device", "cpu"], ["train", "--resume", "--out", run]):
            status, _, err = run_cli(*command)
            assert status == 2 and f"in use by process {os.getpid()}" in err
    (run / "lock").write_text(f"{dead_pid()}\n")  # left by a process killed with -9
    assert run_cli("eval", run, "--device", "cpu")[0] == 0
    assert not (run / "lock").exists()


@pytest.mark.slow
@pytest.mark.parametrize("ranks", [1, 2])
def test_a_sweeps_children_die_with_it(tmp_path, ranks):
    """kill -9 of `bioknow sweep` takes its train child with it (which checkpoints on the
    way out), so a rerun never meets a second trainer; a point of two ranks (torchrun)
    too."""
    data = {"variant": "bioD", "n": 12, "k": 2, "c": 1, "d": 10, "l": 1, "t": 20}
    config = {
        "datasets": [data],
        "models": ["gpt2-1-1"],
        "exposures": 100_000,
        "recipe": {"batch": ranks},
        "train": {"device": "cpu", "log_every": 1, "checkpoint_every": 100_000},
        "gpus_per_point": ranks,
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(config))
    sweep = subprocess.Popen(
        [sys.executable, "-m", "bioknow", "sweep", tmp_path / "grid.yaml", "--out", tmp_path / "s"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.time() + 120
    metrics = []
    while time.time() < deadline and not metrics:  # training has begun
        metrics = [p for p in (tmp_path / "s" / "runs").glob("*/metrics.jsonl") if p.stat().st_size]
        time.sleep(0.2)
    if not metrics:  # leave nothing running behind a failed test
        sweep.kill()
        sweep.wait()
    assert metrics, "the sweep's train child never started"
    locks = [metrics[0].parent / "lock"]
    child = int(locks[0].read_text())
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.wait()
    deadline = time.time() + 60
    while time.time() < deadline and process.alive(child):
        time.sleep(0.2)
    assert not process.alive(child)
    assert train.latest_checkpoint(locks[0].parent) is not None  # it stopped cleanly


def test_die_with_parent_needs_the_parent():
    """A child started after its parent died exits at once."""
    code = "from bioknow.base import process; process.die_with_parent(); print('alive')"
    env = {**os.environ, process.PARENT_ENV: str(dead_pid())}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 128 + signal.SIGTERM and "alive" not in done.stdout


# damaged files whose record was forged to match: the readers still refuse them in one line


def forge(run, rel, data: bytes):
    (run / rel).write_bytes(data)
    integrity.update_record(run, {rel: integrity.digest(run / rel)})


class Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize(
    "rel, damage, command",
    [
        ("CKPT/optimizer.pt", "pickle", "resume"),
        ("CKPT/optimizer.pt", "truncate", "resume"),
        ("CKPT/state.json", "not-json", "eval"),
        ("model.safetensors", "header", "eval"),
        ("model.safetensors", "header", "export"),
        ("config.json", "not-json", "info"),
    ],
    ids=str,
)
def test_damage_behind_a_forged_record(tiny, tmp_path, monkeypatch, rel, damage, command):
    run = copy_tiny(tiny, tmp_path / "pair") / "run"
    monkeypatch.chdir(tmp_path)
    checkpoint = train.latest_checkpoint(run)
    rel = rel.replace("CKPT", f"checkpoints/{checkpoint.name}")
    if rel.endswith("state.json") or rel.endswith("optimizer.pt"):  # used by a resume
        runfolder.read_state(run)  # (the run is finished; resume from its checkpoint)
        integrity.update_record(run, remove=["model.safetensors"])
        state = json.loads((checkpoint / "state.json").read_text())
        state["finished"] = False
        forge(run, f"checkpoints/{checkpoint.name}/state.json", json.dumps(state).encode())
    if damage == "pickle":
        import pickle

        forge(run, rel, pickle.dumps(Payload()))
    elif damage == "truncate":
        forge(run, rel, (run / rel).read_bytes()[:200])
    elif damage == "not-json":
        forge(run, rel, b'{"step": ')
    else:
        forge(run, rel, b"\xff" * 8 + (run / rel).read_bytes()[8:])
    args = {
        "resume": ["train", "--resume", "--out", run],
        "eval": ["eval", run, "--device", "cpu"],
        "export": ["export", run, "--out", tmp_path / "hf"],
        "info": ["info", run],
    }[command]
    status, _, err = run_cli(*args)
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert rel.split("/")[-1] in err and "Traceback" not in err
    assert not (tmp_path / "PWNED").exists()


def test_update_record_refuses_a_corrupt_record(tiny, tmp_path):
    run = copy_tiny(tiny, tmp_path / "pair") / "run"
    text = (run / "integrity.json").read_text()
    (run / "integrity.json").write_text(text.replace('"bytes": ', '"bytes": 1', 1))
    with pytest.raises(InputError, match="integrity.json: corrupt"):
        integrity.update_record(run, {})


def bioknow_subprocess(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m bioknow ARGS` in a process of its own: what a user's terminal shows."""
    command = [sys.executable, "-m", "bioknow", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def test_a_refused_pickle_prints_one_line(tiny, tmp_path):
    """torch's own warning about the pickle is not printed before bioknow's refusal."""
    import pickle

    run = copy_tiny(tiny, tmp_path / "pair") / "run"
    checkpoint = train.latest_checkpoint(run)
    integrity.update_record(run, remove=["model.safetensors"])
    state = json.loads((checkpoint / "state.json").read_text())
    forge(
        run,
        f"checkpoints/{checkpoint.name}/state.json",
        json.dumps({**state, "finished": False}).encode(),
    )
    forge(run, f"checkpoints/{checkpoint.name}/optimizer.pt", pickle.dumps(Payload()))
    done = bioknow_subprocess("train", "--resume", "--out", run)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr
    assert "optimizer.pt: refused" in done.stderr


def test_wandb_without_credentials_writes_nothing(tiny, tmp_path):
    """The credentials are checked before the run folder is made, so the retry (offline,
    or once logged in) is not refused as an existing run."""
    pytest.importorskip("wandb", reason="the optional wandb extra is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path / "home"), NETRC=str(tmp_path / "no-netrc"))
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    (tmp_path / "home").mkdir()
    line = ["train", "--data", tiny / "data", *TINY_TRAIN, "--tracker", "wandb"]
    done = bioknow_subprocess(*line, "--out", tmp_path / "run", env=env)
    assert done.returncode == 2 and "credentials" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "run").exists()
    retry = bioknow_subprocess(
        *line, "--stop-after", 1, "--out", tmp_path / "run", env={**env, "WANDB_MODE": "disabled"}
    )
    assert retry.returncode == 0, retry.stderr


# the progress of a run is what its sealed record says, and reports are tied to weights


def info_json(run) -> dict:
    status, out, err = run_cli("info", run, "--json")
    assert status == 0, err
    return json.loads(out)


def test_progress_is_read_from_the_record(tiny, tmp_path):
    """A pointer beside the record (an older bioknow's `checkpoints/latest`), deleted or
    wrong, changes nothing: a finished run stays finished, eval labels its true step."""
    run = copy_tiny(tiny, tmp_path / "pair") / "run"
    steps = runfolder.read_config(run)["steps"]
    (run / "checkpoints" / "latest").unlink(missing_ok=True)
    state = info_json(run)["state"]
    assert (state["step"], state["finished"]) == (steps, True)
    (run / "checkpoints" / "latest").write_text("step-00000001")
    assert info_json(run)["state"]["step"] == steps
    status, out, err = run_cli("eval", run, "--device", "cpu", "--json")
    assert status == 0, err
    assert json.loads(out)["step"] == steps


def test_final_weights_beside_an_unfinished_checkpoint_are_refused(tiny, tmp_path):
    run = copy_tiny(tiny, tmp_path / "pair") / "run"
    checkpoint = train.latest_checkpoint(run)
    state = json.loads((checkpoint / "state.json").read_text())
    forge(
        run,
        f"checkpoints/{checkpoint.name}/state.json",
        json.dumps({**state, "finished": False}).encode(),
    )
    status, _, err = run_cli("eval", run, "--device", "cpu")
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert "model.safetensors" in err and "not finished" in err


def test_a_report_of_earlier_weights_is_stale(tiny, tmp_path):
    """Evaluated and probed mid-training, then trained on: info marks both reports stale
    (it names them, and says so in its text); evaluating again makes eval.json current."""
    run = tmp_path / "run"
    train.train(str(tiny / "data"), "gpt2-1-1", 10, run, stop_after=6, **TRAIN)
    assert run_cli("eval", run, "--device", "cpu")[0] == 0
    assert run_cli("probe", run, "--epochs", 1, "--device", "cpu")[0] == 0
    assert info_json(run)["stale"] == []
    current = integrity.read_run_json(run, "eval.json")["weights"]
    assert current["sha256"] == integrity.covered(run, current["file"])["sha256"]
    assert run_cli("train", "--resume", "--out", run)[0] == 0
    assert sorted(info_json(run)["stale"]) == ["eval.json", "probe.json"]
    status, out, _ = run_cli("info", run)
    assert [line for line in out.splitlines() if "STALE" in line][0].split()[1] == "eval.json:"
    assert sum("STALE" in line for line in out.splitlines()) == 2
    with pytest.raises(InputError, match="stale"):  # what a results table reads
        runfolder.current_report(run, "eval.json")
    assert run_cli("eval", run, "--device", "cpu")[0] == 0
    assert info_json(run)["stale"] == ["probe.json"]
    report = runfolder.current_report(run, "eval.json")
    assert report["weights"]["sha256"] == runfolder.weights_digest(run)["sha256"]
