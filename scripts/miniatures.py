"""The paper's relative results in miniature (docs/results.md, "The paper's other results
in miniature"): quantization (Result 8), architectures at 100 exposures (Results 6-7),
mixture of experts (Result 9) and junk data with and without a useful-data prefix
(Results 10 and 12), on the CPU capacity grid's bioD.

    python scripts/miniatures.py table RUN... > docs/results/miniatures.csv
    python scripts/miniatures.py figure docs/results/miniatures.csv \
        --out docs/results/miniatures.png

`table` reads finished run folders (every report checked current, else exit 2): one row
per evaluation report of every person (as trained, int8 and int4, GPTQ and
round-to-nearest). R is bits over P, the paper's count (every expert of a mixture
counted); R_total is bits over every parameter. `figure` draws the three comparisons side
by side.
"""

import argparse
import csv
import json
import sys
from pathlib import Path

from bioknow.base.errors import InputError
from bioknow.training import runfolder

COLUMNS = [
    "model", "n", "exposures", "junk_fraction", "useful_prefix", "batch", "lr", "wd",
    "steps", "tokens", "P", "P_total", "quantize", "method", "bits", "bits_max", "R",
    "R_total", "R_max", "p1", "p2", "p3", "train_wall_s", "report",
]  # fmt: skip
REPORTS = ["eval.json", "eval-int8.json", "eval-int8-rtn.json", "eval-int4.json",
           "eval-int4-rtn.json"]  # fmt: skip


def rows(run: Path) -> list[dict]:
    config = runfolder.read_config(run)
    metrics = (run / "metrics.jsonl").read_text().splitlines()
    junk = config.get("junk") or {}
    out = []
    for name in REPORTS:
        if not (run / name).is_file():
            continue
        report = runfolder.current_report(run, name)
        out.append({
            "model": config["model"]["name"], "n": config["n"],
            "exposures": config["exposures"], "junk_fraction": junk.get("fraction", 0.0),
            "useful_prefix": config.get("useful_prefix") or "", "batch": config["batch"],
            "lr": config["lr"], "wd": config["wd"], "steps": config["steps"],
            "tokens": config["tokens"], "P": report["P"], "P_total": report["P_total"],
            "quantize": report["quantize"], "method": report.get("method", ""),
            "bits": report["bits"], "bits_max": report["bits_max"], "R": report["R"],
            "R_total": report["bits"] / report["P_total"], "R_max": report["R_max"],
            "p1": report["p1"], "p2": report["p2"], "p3": report["p3"],
            "train_wall_s": json.loads(metrics[-1])["elapsed_s"], "report": name,
        })  # fmt: skip
    return out


def table(runs: list[str]) -> None:
    read = [r for run in runs for r in rows(Path(run))]  # every run checked before writing
    writer = csv.DictWriter(sys.stdout, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(read)


def read(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def trained(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["quantize"] == "none"]


def architectures(ax, rows: list[dict]) -> None:
    """R of the 1-layer, 2-head models at 100 exposures, one bar per family."""
    chosen = [r for r in trained(rows) if r["exposures"] == "100" and not float(r["junk_fraction"])]
    chosen.sort(key=lambda r: ["gpt2-1-2", "llama-1-2", "gpt2-mlp4-1-2", "gpt2-nomlp-1-2",
                               "gpt2-moe-1-2"].index(r["model"]))  # fmt: skip
    names = [r["model"].replace("-1-2", "") for r in chosen]
    bars = ax.bar(names, [float(r["R"]) for r in chosen], color="C0")
    ax.bar_label(bars, [f"R {float(r['R']):.2f}\n{float(r['bits']) / 1000:.0f}K bits\n"
                        f"P {int(r['P']) / 1000:.0f}K" for r in chosen], fontsize=7)  # fmt: skip
    ax.margins(y=0.25)
    ax.set_title("Architectures, 100 exposures\n(Results 6, 7, 9; L-H = 1-2)", fontsize=9)
    ax.set_ylabel("R = bits / P (the paper's count, every expert)")
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)


def quantization(ax, rows: list[dict]) -> None:
    """Bits kept after quantization, as a share of the run's bits as trained."""
    stored = {(r["model"], int(r["exposures"])) for r in trained(rows) if float(r["bits"]) > 0}
    runs = sorted({(r["model"], int(r["exposures"])) for r in rows if r["quantize"] != "none"})
    runs = [run for run in runs if run in stored]  # a share of nothing stored means nothing
    settings = [("int8", "gptq"), ("int8", "rtn"), ("int4", "gptq"), ("int4", "rtn")]
    width = 0.8 / len(settings)
    for i, (q, m) in enumerate(settings):
        kept = []
        for model, e in runs:
            mine = [r for r in rows if (r["model"], int(r["exposures"])) == (model, e)]
            base = next(float(r["bits"]) for r in mine if r["quantize"] == "none")
            after = [float(r["bits"]) for r in mine if (r["quantize"], r["method"]) == (q, m)]
            kept.append(after[0] / base if after else float("nan"))
        ax.bar([j + (i - 1.5) * width for j in range(len(runs))], kept, width, label=f"{q} {m}")
    ax.axhline(1, color="k", lw=0.8)
    ax.set_xticks(range(len(runs)), [f"{m}\n{e} exp." for m, e in runs], fontsize=7)
    ax.set_title("Quantization (Result 8)\nbits kept / bits as trained", fontsize=9)
    ax.legend(fontsize=7)


def junk(ax, rows: list[dict]) -> None:
    """R of gpt2-1-1: no junk at 300 exposures and at 600 (the steps of the half-junk
    runs), half junk at 300, half junk with the prefix at 300."""
    chosen = [
        r for r in trained(rows)
        if r["model"] == "gpt2-1-1" and r["exposures"] in ("300", "600")
    ]  # fmt: skip
    chosen.sort(key=lambda r: (float(r["junk_fraction"]), r["useful_prefix"], r["exposures"]))
    names = [
        (f"junk {float(r['junk_fraction']):g}" if float(r["junk_fraction"]) else "no junk")
        + ("\n+ prefix" if r["useful_prefix"] else "")
        + f"\n{r['exposures']} exp.\n{int(r['steps']) // 1000}K steps"
        for r in chosen
    ]
    bars = ax.bar(names, [float(r["R"]) for r in chosen], color="C2")
    ax.bar_label(bars, [f"{float(r['R']):.3f}" for r in chosen], fontsize=7)
    ax.set_title("Junk data (Results 10, 12)\ngpt2-1-1, batch 1", fontsize=9)
    ax.set_ylabel("R = bits / P")
    ax.tick_params(axis="x", labelsize=7)


def figure(path: str, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = read(path)
    fig, axes = plt.subplots(1, 3, figsize=(16, 5), width_ratios=[1, 1.9, 1.1])
    architectures(axes[0], data)
    quantization(axes[1], data)
    junk(axes[2], data)
    fig.suptitle("Part 3.3's relative results in miniature: bioD(N=900, K=2, C=16, D=128), "
                 "2-core CPU", fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(out, dpi=150)
    print(f"-> {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("table").add_argument("runs", nargs="+")
    f = sub.add_parser("figure")
    f.add_argument("csv")
    f.add_argument("--out", required=True)
    args = parser.parse_args()
    try:
        if args.what == "table":
            table(args.runs)
        else:
            for path in [args.csv]:
                if not Path(path).is_file():
                    raise InputError(f"{path}: no such file")
            figure(args.csv, args.out)
    except InputError as e:
        print(f"miniatures: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
