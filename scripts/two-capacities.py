"""Two capacities of the same small models, side by side (docs/results.md, "Two
capacities"): the bits of random sequences they memorize (Morris et al. 2025, arXiv
2505.24832) and the bits of bioD knowledge they store (Part 3.3, Def. 4.1), per parameter.

    python scripts/two-capacities.py table RUN... > docs/results/memorization-cpu.csv
    python scripts/two-capacities.py figure docs/results/capacity-cpu.csv \
        docs/results/capacity-cpu-exposures.csv docs/results/memorization-cpu.csv \
        --out docs/results/two-capacities.png

`table` reads finished random-sequence run folders (their config.json, metrics.jsonl and
eval.json) and adds the saturation check: the mean training loss over the last tenth of
the logged steps against the tenth before it (a run is called saturated when it fell by
less than 1%). `figure` draws bits per parameter against exposures: each model's bioD R
as a line, its largest memorized bits per parameter as a marker, with the papers' levels.
"""

import argparse
import csv
import json
import sys
from pathlib import Path

from bioknow.base.errors import InputError
from bioknow.training import runfolder

COLUMNS = [
    "model", "n", "length", "symbols", "exposures", "batch", "lr", "wd", "steps", "tokens",
    "P", "P_total", "bits_max", "bits", "bits_clamped", "R", "R_total", "exact",
    "loss_prev_tenth", "loss_last_tenth", "loss_drop", "saturated", "wall_s",
]  # fmt: skip
SATURATED = 0.01  # the last tenth's loss within 1% of the tenth before it


def tenths(metrics: list[dict]) -> tuple[float, float]:
    """Mean logged loss over the tenth before last and the last tenth of the steps (a
    run logged too sparsely for that compares its last two logged lines)."""
    last = metrics[-1]["step"]

    def mean(lo, hi):
        losses = [m["loss"] for m in metrics if lo < m["step"] <= hi]
        return sum(losses) / len(losses) if losses else None

    before, after = mean(0.8 * last, 0.9 * last), mean(0.9 * last, last)
    if before is None:
        return metrics[-2]["loss"], metrics[-1]["loss"]
    return before, after


def row(run: Path) -> dict:
    config = runfolder.read_config(run)
    report = runfolder.current_report(run, "eval.json")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    before, last = tenths(metrics)
    drop = (before - last) / before
    return {
        "model": config["model"]["name"], "n": config["n"], "length": report["length"],
        "symbols": report["symbols"], "exposures": config["exposures"],
        "batch": config["batch"], "lr": config["lr"], "wd": config["wd"],
        "steps": config["steps"], "tokens": config["tokens"], "P": report["P"],
        "P_total": report["P_total"], "bits_max": report["bits_max"], "bits": report["bits"],
        "bits_clamped": report["bits_clamped"], "R": report["R"], "R_total": report["R_total"],
        "exact": report["exact"], "loss_prev_tenth": before, "loss_last_tenth": last,
        "loss_drop": drop, "saturated": drop < SATURATED,
        "wall_s": metrics[-1]["elapsed_s"],
    }  # fmt: skip


def table(runs: list[str]) -> None:
    rows = [row(Path(run)) for run in runs]  # every run checked before writing
    writer = csv.DictWriter(sys.stdout, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def read(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def figure(knowledge: list[str], memorization: str, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bio = [r for path in knowledge for r in read(path)]
    mem = read(memorization)
    models = sorted({r["model"] for r in bio}, key=lambda m: float(bio_p(bio, m)))
    fig, ax = plt.subplots(figsize=(7.5, 6.4))
    ax.axhspan(3.5, 3.8, color="0.85", label="Morris et al.: random sequences, 3.5-3.8")
    ax.plot([100, 1000], [1, 2], "ks", label="Part 3.3: knowledge, 1 (100) and 2 (1000)")
    for i, model in enumerate(models):
        colour = f"C{i}"
        points = sorted((int(r["exposures"]), float(r["R"])) for r in bio if r["model"] == model)
        ax.plot(*zip(*points, strict=True), "-o", color=colour, label=f"{model}: bioD knowledge R")
        best = max(
            (r for r in mem if r["model"] == model), key=lambda r: float(r["R"]), default=None
        )
        if best:
            ax.plot([int(best["exposures"])], [float(best["R"])], "*", ms=14, color=colour,
                    label=f"{model}: random sequences, most memorized (N={best['n']})")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("exposures (passes over the data)")
    ax.set_ylabel("bits per parameter (P, the paper's count)")
    ax.set_title("Two capacities of the same models, one trainer (2-core CPU)")
    ax.set_ylim(-0.2, 4.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=150)
    print(f"-> {out}")


def bio_p(rows: list[dict], model: str) -> str:
    return next(r["P"] for r in rows if r["model"] == model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("table")
    t.add_argument("runs", nargs="+")
    f = sub.add_parser("figure")
    f.add_argument("csvs", nargs="+", help="knowledge CSVs, then the memorization CSV last")
    f.add_argument("--out", required=True)
    args = parser.parse_args()
    try:
        if args.what == "table":
            table(args.runs)
        else:
            for path in args.csvs:
                if not Path(path).is_file():
                    raise InputError(f"{path}: no such file")
            figure(args.csvs[:-1], args.csvs[-1], args.out)
    except InputError as e:
        print(f"two-capacities: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
