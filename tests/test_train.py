import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bioknow import cli
from bioknow.base.errors import InputError
from bioknow.data import dataset
from bioknow.data.render.tokens import LABELS
from bioknow.data.stream import eval_batches
from bioknow.training import feed, train

VALUES = [LABELS.index(a) for a in ("birth_date", "birth_city", "university", "major", "employer")]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    for variant, n in (("bioS", 60), ("bioS-simple", 100)):
        dataset.generate(variant, n, 1, root / variant, sample=0)
    return root


def run(data_dir, out, model="gpt2-1-2", exposures=3, **kw):
    kw.setdefault("batch", 4)
    kw.setdefault("device", "cpu")
    return train.train(str(data_dir), model, exposures, out, **kw)


def weights(path):
    return load_file(str(path / "model.safetensors"))


def test_exposure_accounting(data, tmp_path):
    state = run(data / "bioS", tmp_path / "r", exposures=3, log_every=5)
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    ds = dataset.open_dataset(data / "bioS")
    per_round = [ds.table.lengths(np.arange(60), r).sum() for r in range(3)]
    assert state["finished"] and state["tokens"] == config["tokens"] == sum(per_round)
    assert config["steps"] == -(-config["tokens"] // (4 * 512)) == state["step"]
    metrics = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == config["steps"] and metrics[-1]["tokens"] == state["tokens"]
    assert "shortened" in config["warmup_note"]
    assert config["params"]["P"] < config["params"]["total"]
    assert (tmp_path / "r" / "model.safetensors").is_file()


def test_resume_is_bit_identical(data, tmp_path):
    whole = run(data / "bioS", tmp_path / "whole", exposures=4, checkpoint_every=3)
    part = run(data / "bioS", tmp_path / "part", exposures=4, stop_after=5, checkpoint_every=3)
    assert not part["finished"] and part["step"] == 5
    assert not (tmp_path / "part" / "model.safetensors").exists()
    done = train.train(None, None, None, tmp_path / "part", resume=True, device="cpu")
    assert done["finished"] and done["tokens"] == whole["tokens"]
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "part")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert done["loss"] == whole["loss"]


def test_targets_shift_and_mask():
    tokens = np.arange(12, dtype=np.int32).reshape(2, 6)
    t = feed.targets_of(tokens, np.array([6, 3]))
    assert t[0].tolist() == [1, 2, 3, 4, 5, -100]
    assert t[1].tolist() == [7, 8, -100, -100, -100, -100]


def value_loss(run_dir, ds) -> float:
    """Mean loss per token on the value tokens of every biography (position t scores t+1)."""
    _, model, _ = train.load_run(run_dir)
    total, count = 0.0, 0
    with torch.no_grad():
        for b in eval_batches(ds.table, np.arange(ds.manifest["n"]), 50, 0):
            logits, _ = model(torch.from_numpy(b.tokens).long())
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2),
                torch.from_numpy(b.tokens[:, 1:]).long(),
                reduction="none",
            )
            wanted = torch.from_numpy(np.isin(b.labels[:, 1:], VALUES))
            total += float(nll[wanted].sum())
            count += int(wanted.sum())
    return total / count


@pytest.mark.slow
def test_a_tiny_gpt2_learns_the_values(data, tmp_path):
    ds = dataset.open_dataset(data / "bioS-simple")
    run(
        data / "bioS-simple",
        tmp_path / "learn",
        model="gpt2-2-2",
        exposures=60,
        batch=2,
        lr=3e-3,
        wd=0.0,
        log_every=100,
    )
    assert value_loss(tmp_path / "learn", ds) < 0.1


@pytest.mark.parametrize(
    "data_dir, model, exposures",
    [("bioS", "gpt3-1-1", "1"), ("none", "gpt2-1-1", "1"), ("bioS", "gpt2-1-1", "0"), (None,) * 3],
)
def test_bad_input(data, tmp_path, data_dir, model, exposures):
    """Exit status 2 and nothing written; None: --resume with nothing to resume."""
    if data_dir is None:
        args = ["--resume"]
    else:
        folder = data / data_dir if data_dir == "bioS" else tmp_path / data_dir
        args = ["--data", str(folder), "--model", model, "--exposures", exposures]
    assert cli.main(["train", *args, "--out", str(tmp_path / "run")]) == 2
    assert not any(tmp_path.iterdir())


def test_unknown_device():
    with pytest.raises(InputError):
        train.place("tpu")


def test_every_family_trains_a_step(data, tmp_path):
    for name in ("llama-1-2", "mistral-1-2", "gpt2-mlp4-1-2", "gpt2-nomlp-1-2", "gpt2-moe-1-2"):
        state = run(data / "bioS", tmp_path / name, model=name, exposures=1, batch=16)
        assert state["finished"] and np.isfinite(state["loss"])


def test_ddp_two_processes_match_one(data, tmp_path):
    """torchrun with 2 CPU processes (gloo) and the same global batch gives the weights a
    single process gives, up to float rounding."""
    args = [
        "--data",
        str(data / "bioS"),
        "--model",
        "gpt2-1-2",
        "--exposures",
        "2",
        "--batch",
        "4",
        "--device",
        "cpu",
        "--precision",  # exact arithmetic, so the two may agree to 1e-5
        "float32",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = subprocess.run(
        [sys.executable, "-m", "bioknow", "train", *args, "--out", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "bioknow",
            "train",
            *args,
            "--out",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
    one = json.loads((tmp_path / "one" / "config.json").read_text())
    two = json.loads((tmp_path / "two" / "config.json").read_text())
    assert two["world_size"] == 2 and one["steps"] == two["steps"] > 1


def test_sigterm_writes_a_checkpoint_and_resume_finishes(data, tmp_path):
    import signal
    import time

    out = tmp_path / "sig"
    cmd = [
        sys.executable,
        "-m",
        "bioknow",
        "train",
        "--data",
        str(data / "bioS-simple"),
        "--model",
        "gpt2-1-1",
        "--exposures",
        "40",
        "--batch",
        "2",
        "--device",
        "cpu",
        "--checkpoint-every",
        "100000",
        "--log-every",
        "1",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size):
        time.sleep(0.05)  # signalled once it trains, however slow the machine
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    state = json.loads((train.latest_checkpoint(out) / "state.json").read_text())
    steps = json.loads((out / "config.json").read_text())["steps"]
    assert 0 < state["step"] < steps and not state["finished"]
    done = train.train(None, None, None, out, resume=True, device="cpu")
    assert done["finished"] and done["step"] == steps


def test_overwrite_with_bad_arguments_keeps_the_old_run(data, tmp_path):
    run(data / "bioS", tmp_path / "r", exposures=1)
    before = weights(tmp_path / "r")
    with pytest.raises(InputError):
        train.train(str(data / "bioS"), "gpt2-0-1", 1, tmp_path / "r", device="cpu", overwrite=True)
    after = weights(tmp_path / "r")
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_bf16_keeps_the_bits(data, tmp_path):
    """The CPU's default bf16 autocast trains a model that stores the same knowledge as
    float32: on a run that stores most of it, bits within 4% of the maximum (they differ
    by about 2% here; different seeds of this run spread over about 6%) and a final loss
    within 15%. And it is really bf16: the weights differ from float32's."""
    from bioknow.measure.evaluate import evaluate_run

    reports, finals = {}, {}
    for precision in ("float32", "bf16"):
        out = tmp_path / precision
        state = run(
            data / "bioS-simple", out, "gpt2-1-2", 60, batch=2, lr=3e-3, wd=0.0, precision=precision
        )
        assert json.loads((out / "config.json").read_text())["precision"] == precision
        reports[precision], finals[precision] = evaluate_run(out, device="cpu"), state["loss"]
    a, b = weights(tmp_path / "float32"), weights(tmp_path / "bf16")
    assert not all(torch.equal(a[k], b[k]) for k in a)
    fp32, bf16 = reports["float32"], reports["bf16"]
    assert min(fp32["bits"], bf16["bits"]) > 0.8 * fp32["bits_max"]
    assert abs(bf16["bits"] - fp32["bits"]) < 0.04 * fp32["bits_max"]
    assert finals["bf16"] == pytest.approx(finals["float32"], rel=0.15)


def test_final_loss_is_the_training_s_not_the_logging_s(data, tmp_path, monkeypatch):
    """The final loss is the mean training loss of the last 1% of the steps (here: the
    last step, so the last line of a log of every step): the same weights give the same
    final loss whatever --log-every, and a run stopped inside those steps and resumed
    gives the uninterrupted run's figure."""
    every = run(data / "bioS-simple", tmp_path / "every", log_every=1)
    sparse = run(data / "bioS-simple", tmp_path / "sparse", log_every=7)
    a, b = weights(tmp_path / "every"), weights(tmp_path / "sparse")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert every["loss"] != sparse["loss"]  # the last logged loss is the logging's
    assert every["final_loss"] == sparse["final_loss"]
    last = json.loads((tmp_path / "every" / "metrics.jsonl").read_text().splitlines()[-1])
    assert every["final_loss"] == pytest.approx(last["loss"], rel=1e-6)
    monkeypatch.setattr(train, "FINAL_SHARE", 0.5)  # the last 6 of 11 steps
    whole = run(data / "bioS-simple", tmp_path / "whole", log_every=5)
    part = run(data / "bioS-simple", tmp_path / "part", log_every=5, stop_after=8)
    assert part["final_loss"] is None
    done = train.train(None, None, None, tmp_path / "part", resume=True, device="cpu")
    assert done["final_loss"] == whole["final_loss"] != every["final_loss"]


def test_a_failure_of_rank_0_alone_stops_every_rank(data, tmp_path):
    """torchrun, 2 CPU ranks on gloo: the run's lock is held by another process, which
    rank 0 alone sees (it alone takes the lock). Every rank learns of it and stops with
    rank 0's message and exit status 2, instead of waiting in its next collective."""
    import fcntl
    import time

    out = tmp_path / "r"
    run(data / "bioS-simple", out, exposures=1, stop_after=1)
    holder = os.open(out / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another process's lock, as rank 0 finds it
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd = [*torchrun, "--nproc_per_node=2", "-m", "bioknow", "train", "--resume", "--out", out]
    started = time.monotonic()
    try:
        done = subprocess.run(
            [str(c) for c in cmd],
            env=dict(os.environ, OMP_NUM_THREADS="1"),
            capture_output=True,
            text=True,
            timeout=300,  # far below gloo's 30-minute collective timeout
        )
    finally:
        os.close(holder)
    # the two ranks write to one stderr at once: their lines may run together
    assert done.stderr.count("bioknow: error:") == 2, done.stderr[-3000:]
    assert "in use by process" in done.stderr
    assert "rank 0 failed, so rank 1 stops" in done.stderr
    # rank 1 stopped by itself, with rank 0's message; torchrun may end rank 0 first
    assert done.returncode != 0 and "exitcode  : 2" in done.stderr, done.stderr[-3000:]
    assert time.monotonic() - started < 300
    assert runfolder_step(out) == 1  # nothing written


def runfolder_step(out) -> int:
    from bioknow.training import runfolder

    return runfolder.read_state(out)["step"]
