"""scripts/gpu-check.sh rehearsed on the CPU (--smoke): every part runs and ends well,
and the eight files the GPU call brings back are there."""

import json
import subprocess
from pathlib import Path

import pyarrow.csv as pacsv
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu-check.sh"
FILES = {
    "summary.txt", "train-bench.json", "eval-bench.json", "fig1-small.csv", "fig1-small.png",
    "fig1-fit.json", "cuda-tests.xml", "logs.tar.gz",
}  # fmt: skip


@pytest.mark.slow
def test_the_gpu_check_rehearses_on_the_cpu(tmp_path):
    import sys

    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(tmp_path)}
    done = subprocess.run(
        ["bash", str(SCRIPT), "--smoke", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == FILES
    summary = (out / "summary.txt").read_text()
    parts = [line for line in summary.splitlines() if line.startswith("   exit ")]
    assert len(parts) == 6 and all(p.startswith("   exit 0 ") for p in parts), summary
    bench = json.loads((out / "train-bench.json").read_text())
    assert bench[0]["runs"][0]["transformers bf16"]["bioknow_over_transformers"] > 0
    assert json.loads((out / "eval-bench.json").read_text())["people_per_s"] > 0
    rows = pacsv.read_csv(out / "fig1-small.csv").to_pylist()
    assert len(rows) == 2 and {r["status"] for r in rows} == {"done"}
