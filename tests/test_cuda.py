"""The CUDA path (run with `pytest -m cuda` on a GPU; skipped without one): bf16 training
steps learn, evaluation on CUDA equals evaluation on the CPU, a run trained on CUDA
exports to transformers, and NCCL DDP over two GPUs equals one process."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from bioknow.data import dataset
from bioknow.measure import export
from bioknow.measure.evaluate import evaluate_run
from bioknow.training import train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("cuda") / "data"
    dataset.generate("bioS-simple", 200, 0, out, sample=0)
    return out


@pytest.fixture(scope="module")
def cuda_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cuda") / "run"
    train.train(str(data), "gpt2-2-2", 30, out, batch=4, lr=3e-3, wd=0.0, device="cuda")
    return out


def test_bf16_steps_fall_in_loss(cuda_run):
    config = json.loads((cuda_run / "config.json").read_text())
    assert config["device"] == "cuda" and config["precision"] == "bf16" and config["compile"]
    losses = [json.loads(x)["loss"] for x in (cuda_run / "metrics.jsonl").read_text().split()]
    assert losses[-1] < 0.5 * losses[0]


def test_eval_on_cuda_equals_eval_on_the_cpu(cuda_run):
    on_gpu = evaluate_run(cuda_run, device="cuda")
    on_cpu = evaluate_run(cuda_run, device="cpu")
    for key in ("p1", "p2", "bits", "R"):
        assert on_gpu[key] == pytest.approx(on_cpu[key], rel=1e-3), key


def test_a_cuda_run_exports_to_transformers(cuda_run, tmp_path):
    export.export_run(cuda_run, tmp_path / "hf")
    model, _ = export.load_hf(tmp_path / "hf", "cuda")
    _, ours, _ = train.load_run(cuda_run, "cuda")
    ids = torch.randint(0, ours.config.vocab_size, (2, 64), device="cuda")
    with torch.no_grad():
        theirs = model(input_ids=ids).logits.float()
        mine = ours(ids)[0]
    torch.testing.assert_close(theirs, mine, rtol=0, atol=1e-3)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL DDP needs two GPUs")
def test_nccl_ddp_on_two_gpus_equals_one_process(data, tmp_path):
    args = ["--data", str(data), "--model", "gpt2-1-2", "--exposures", "4", "--batch", "8"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for name, launcher in (
        ("one", [sys.executable, "-m", "bioknow"]),
        ("two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc_per_node=2", "-m", "bioknow"]),
    ):  # fmt: skip
        done = subprocess.run(
            [*launcher, "train", *args, "--out", str(tmp_path / name)],
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    for key in a:  # bf16 noise: the two sum gradients in different orders
        torch.testing.assert_close(a[key], b[key], rtol=0.05, atol=2e-3)
