"""The paper's sweep configs (scripts/paper/): each valid for a local sweep, --per-gpu and
--launcher slurm, each priced in its opening comment, and each rehearsed end to end
(`bioknow sweep CONFIG --rehearse`): generate, train, eval (quantized where it says),
plot and fit on the grid shrunk to tiny N, exposures and models."""

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bioknow import cli
from bioknow.base import validate
from bioknow.study import rehearse, slurm, sweep

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
CONFIGS = sorted((SCRIPTS / "paper").glob("*.yaml"))
# the CPU experiments of docs/results.md, rehearsed beside the paper's configs
CPU = [
    *sorted((SCRIPTS / "miniatures").glob("*.yaml")),
    *(SCRIPTS / f"capacity-cpu{s}.yaml" for s in ("", "-exposures", "-3000", "-lr", "-lr3")),
    SCRIPTS / "capacity-cpu-structure.yaml",
]
RESULTS = ("Figure 1(a)", "Figure 1(b)", "Result 2", "Result 3", "Result 8", "Result 9")


def test_a_config_for_each_result():
    text = "\n".join(p.read_text() for p in CONFIGS)
    for result in (*RESULTS, "Results 5-7", "Result 10", "Result 11", "Result 12"):
        assert result in text
    assert len([p for p in CONFIGS if "architectures" in p.name]) == 2  # 1000 and 100


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_paper_config_is_valid_everywhere_and_priced(path):
    raw = sweep.load_config(path)
    assert sweep.points(raw)  # a local sweep's checks: every value, model, dataset memory
    config = sweep.check_config(raw)
    validate.check(validate.SWEEP, {"per_gpu": 4}, "--")
    launcher = slurm.Launcher(time="4:00:00", per_gpu=4)
    assert launcher.gpus(config) == config["gpus_per_point"]  # --launcher slurm's checks
    head = path.read_text().split("\ndatasets:")[0]
    assert all(line.startswith("#") for line in head.splitlines())
    assert "Compare" in head and "Part 3.3 (arXiv 2404.05405)" in head
    cost = head.split("Cost (bioknow plan, one H100):")[1]
    assert "COST" not in cost and "H100-hours" in cost and "disk" in cost


def test_the_shrinking_rule():
    raw = {
        "datasets": [
            {"variant": "bioD", "n": [10000, 50000], "k": [1, 4], "c": 2, "d": 100, "l": 4}
            | {"t": 200},
            {"variant": "bioR-style", "n": 1000, "seed": 3},
        ],
        "models": ["gpt2-2-2", "gpt2-12-12", "llama-4-4"],
        "exposures": [100, 1000],
        "seeds": [0, 1],
        "recipe": {"lr": [1e-3, 5e-4], "batch": 192},
        "quantize": ["int8", "int4"],
        "train": {"device": "cuda", "junk_fraction": 0.5, "junk_n": 1000},
        "eval": {"people": 2000},
        "gpus_per_point": 4,
    }
    small = rehearse.shrink(raw)
    assert small["datasets"] == [
        {"variant": "bioD", "n": 40, "seed": 0, "vocab_size": 320, **rehearse.BIOD_SHAPE},
        {"variant": "bioR-style", "n": 40, "seed": 3, "vocab_size": 320, "renderings": 2},
    ]
    assert small["models"] == ["gpt2-1-1", "llama-1-1"]
    assert (small["exposures"], small["seeds"]) == ([2], [0])
    assert small["recipe"] == {"lr": 1e-3, "batch": 8}
    assert small["quantize"] == ["int8", "int4"]
    assert small["train"] == {"junk_fraction": 0.5, "junk_n": 1000}
    assert small["eval"] == {"people": 20} and "gpus_per_point" not in small
    assert len(sweep.points(small)) == 4


def test_a_config_that_fails_on_a_cluster_fails_its_rehearsal(tmp_path, capsys):
    """A useful-data prefix that is a token already: every check of the config passes,
    train refuses it."""
    config = tmp_path / "bad.yaml"
    config.write_text(
        "datasets: [{variant: bioS-simple, n: 1000}]\nmodels: [gpt2-2-2]\nexposures: 10\n"
        "train: {junk_fraction: 0.5, junk_n: 1000, useful_prefix: '<|endoftext|>'}\n"
    )
    assert cli.main(["sweep", str(config), "--rehearse", "--out", str(tmp_path / "r")]) == 1
    assert "FAILED" in capsys.readouterr().out
    log = next((tmp_path / "r" / "logs").iterdir()).read_text()
    assert "--useful-prefix must be a new token" in log


def rehearsal(path: Path, out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "bioknow", "sweep", str(path), "--rehearse", "--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.mark.slow
def test_every_paper_and_cpu_config_rehearses(tmp_path):
    """Configs whose shrunk grids are equal are rehearsed once; two rehearsals at a time."""
    assert len(CPU) == 10 and all(p.is_file() for p in CPU)
    grids: dict[str, list[Path]] = {}
    for path in [*CONFIGS, *CPU]:
        grids.setdefault(json.dumps(rehearse.shrink(sweep.load_config(path))), []).append(path)
    firsts = [paths[0] for paths in grids.values()]
    outs = [tmp_path / p.stem for p in firsts]
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(rehearsal, firsts, outs))
    for path, out, result in zip(firsts, outs, done, strict=True):
        assert result.returncode == 0, (path.name, result.stdout[-2000:], result.stderr[-2000:])
        config = json.loads((out / "sweep.json").read_text())["config"]
        assert config == rehearse.shrink(sweep.load_config(path))
        rows = pq.read_table(out / "runs.parquet").to_pylist()
        assert rows and all(r["status"] == "done" for r in rows)
        assert {r["quantize"] for r in rows} == set(sweep.quantize_settings(config))
        assert (out / "capacity.png").stat().st_size > 0 and (out / "fit.json").is_file()
        if len(config["quantize"]) > 1:
            assert (out / "quantized.png").is_file()
