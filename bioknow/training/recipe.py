"""Training recipes: the paper's defaults by N and exposures (Part 3.3, Appendix A).

The row nearest to (N, exposures) on log scales gives weight decay, peak learning rate
and batch size; where the paper gives a learning-rate range we take its lower end.
Below a row (fewer people or exposures than it has, so fewer steps at its batch) the
batch shrinks in proportion to N x exposures, down to 1, so the run keeps the row's
number of steps: the paper's own rule for small N (it advises at least 50K steps and
shrinks the batch to get them, Remark A.2). AdamW (0.9, 0.98, eps 1e-6), linear warmup
for 1000 steps (shortened to a tenth of the run when the run is shorter than 10,000
steps), cosine decay to 0.1 x the peak.
"""

import math
from dataclasses import dataclass

# N -> {exposures: (weight decay, peak lr, batch)}; docs/design.md §6.
TABLE = {
    10_000: {1000: (0.02, 1e-3, 24)},
    20_000: {1000: (0.02, 1e-3, 48)},
    50_000: {1000: (0.02, 1e-3, 96), 100: (0.01, 1e-3, 12)},
    100_000: {1000: (0.02, 1e-3, 192), 100: (0.01, 1e-3, 24)},
    200_000: {1000: (0.02, 1e-3, 192), 100: (0.01, 1e-3, 48)},
    500_000: {1000: (0.01, 5e-4, 192), 100: (0.01, 5e-4, 96)},
    1_000_000: {1000: (0.01, 5e-4, 192), 100: (0.01, 5e-4, 192)},
    2_000_000: {1000: (0.005, 3e-4, 1536), 100: (0.01, 3e-4, 384)},
    5_000_000: {1000: (0.002, 3e-4, 1536), 100: (0.01, 3e-4, 768)},
    10_000_000: {1000: (0.001, 3e-4, 1536), 100: (0.01, 2e-4, 1024)},
    20_000_000: {100: (0.002, 2e-4, 1536)},
}
WARMUP = 1000
# Fewer steps than this, even at batch 1, and a run is warned that it may learn little.
SHORT_RUN = 1000
MIN_LR_RATIO = 0.1
BETAS = (0.9, 0.98)
EPS = 1e-6


@dataclass
class Recipe:
    lr: float
    wd: float
    batch: int
    warmup: int | None = None  # None: derived from the step count by `resolve`
    source: str = ""  # which table row
    shrunk: str = ""  # how the batch was shrunk below it, if it was


def default(n: int, exposures: int) -> Recipe:
    """The table row nearest to (N, exposures), by distance in log10; below it, the
    row's lr and wd with the batch shrunk to keep the row's steps."""

    def distance(row):
        rn, re = row
        return abs(math.log10(rn / n)) + abs(math.log10(re / exposures))

    rows = [(rn, re) for rn, by_e in TABLE.items() for re in by_e]
    rn, re = min(rows, key=distance)
    wd, lr, row_batch = TABLE[rn][re]
    batch = max(1, min(row_batch, round(row_batch * n * exposures / (rn * re))))
    shrunk = ""
    if batch < row_batch:
        shrunk = (
            f", its batch {row_batch} shrunk to {batch} in proportion to N x exposures "
            f"({n * exposures:.3g} of its {rn * re:.3g}) to keep its steps (Remark A.2)"
        )
    source = f"the paper's table row N={rn:g}, {re} exposures"
    return Recipe(lr=lr, wd=wd, batch=batch, source=source, shrunk=shrunk)


def describe(rec: Recipe, given: list[str]) -> str:
    """Where the recipe comes from, for config.json and the screen."""
    out = rec.source + ("" if "batch" in given else rec.shrunk)
    return out + (f"; {', '.join(given)} as given" if given else "")


def short_run_warning(steps: int, batch: int) -> str | None:
    """A warning for a run too short to learn much, or None."""
    if steps >= SHORT_RUN:
        return None
    return (
        f"only {steps} steps: the paper trains for at least 50,000, and a run of fewer than "
        f"{SHORT_RUN} may store little; use more exposures"
        + (" or a smaller --batch" if batch > 1 else "")
    )


def warmup_steps(steps: int, asked: int | None) -> tuple[int, str]:
    """Warmup steps and a note saying why: as given, the paper's 1000, or shortened."""
    if asked is not None:
        return asked, "as given"
    if steps >= 10 * WARMUP:
        return WARMUP, "the paper's 1000 steps"
    return max(1, steps // 10), f"shortened to a tenth of the {steps} steps (run < 10,000 steps)"


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warmup to the peak, then cosine decay to MIN_LR_RATIO x peak at the end."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress)))
