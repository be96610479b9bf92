"""The published table of a sweep: one row per run, the columns a reader compares with the
paper (the dataset's parameters, model, P, bits, R against Rmax, accuracy, the recipe,
steps, tokens and wall time), without the machine-specific config column. A row is used
only when its report measured the run's current weights (its weights_sha256 is the digest
the run's integrity.json holds for them): a stale report, or one that does not say which
weights it measured (an older bioknow's), is refused with exit status 2 and one line;
running the sweep again evaluates such points again.

    python scripts/results-table.py out/capacity-cpu docs/results/capacity-cpu.csv
"""

import csv
import sys
from pathlib import Path

from bioknow.base.errors import InputError
from bioknow.training import runfolder

COLUMNS = [
    "variant", "n", "data_seed", "k", "c", "d", "l", "t", "vocab_size", "exposures", "model",
    "seed", "P", "P_total", "P_nonembedding", "batch", "lr", "wd", "warmup", "steps",
    "tokens", "final_loss", "wall_s", "tokens_per_s", "people", "p1", "p2", "p3",
    "bits_name", "bits_value", "bits_diversity", "bits", "bits_clamped", "bits_max", "R",
    "R_clamped", "R_max", "R_ci95_low", "R_ci95_high", "accuracy",
]  # fmt: skip


def check_current(sweep: Path, row: dict) -> None:
    """Refuse a row whose report did not measure its run's current weights."""
    run = sweep / "runs" / row["point"]
    if not row.get("weights_sha256"):
        raise InputError(
            f"{run}: its report does not say which weights it measured (an older bioknow's); "
            "run the sweep again, it evaluates the point again"
        )
    if row["weights_sha256"] != runfolder.weights_digest(run)["sha256"]:
        raise InputError(
            f"{run}: its report measured other weights than the run's current ones (stale); "
            "run the sweep again, it evaluates the point again"
        )


def main(sweep: str, out: str) -> None:
    with open(Path(sweep) / "runs.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "done"]
    for row in rows:
        check_current(Path(sweep), row)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)  # absent columns (intervals of a full evaluation) stay empty
    print(f"{len(rows)} runs -> {out}")


if __name__ == "__main__":
    try:
        main(*sys.argv[1:])
    except InputError as e:
        print(f"results-table: {e}", file=sys.stderr)
        sys.exit(2)
