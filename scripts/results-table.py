"""The published table of a sweep: one row per run, the columns a reader compares with the
paper (the dataset's parameters, model, P, bits, R against Rmax, accuracy, the recipe,
steps, tokens and wall time), without the machine-specific config column.

    python scripts/results-table.py out/capacity-cpu docs/results/capacity-cpu.csv
"""

import csv
import sys
from pathlib import Path

COLUMNS = [
    "variant", "n", "data_seed", "k", "c", "d", "l", "t", "vocab_size", "exposures", "model",
    "seed", "P", "P_total", "P_nonembedding", "batch", "lr", "wd", "warmup", "steps",
    "tokens", "final_loss", "wall_s", "tokens_per_s", "people", "p1", "p2", "p3",
    "bits_name", "bits_value", "bits_diversity", "bits", "bits_clamped", "bits_max", "R",
    "R_clamped", "R_max", "R_ci95_low", "R_ci95_high", "accuracy",
]  # fmt: skip


def main(sweep: str, out: str) -> None:
    with open(Path(sweep) / "runs.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "done"]
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)  # absent columns (intervals of a full evaluation) stay empty
    print(f"{len(rows)} runs -> {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
