"""The memorization figure of a sweep of random-sequence runs, as Morris et al. 2025
(arXiv 2505.24832) draw their Figure 1: memorized bits against the dataset's bits
(N S log2 V), log-log, one colour per model (ordered by P), each model's plateau
(`bioknow.study.plateau`: a dashed line from its knee on, its 95% interval shaded) and, thin and
dotted, 3.6 bits per parameter (Morris et al.) of each model. The grey diagonal is the
whole dataset memorized. Points are the unclamped memorized bits; hollow markers are the
bits with each sequence clamped at 0; a run with nothing memorized sits on the bottom edge.
`bioknow plot --kind memorization`.
"""

from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bioknow.base.errors import InputError
from bioknow.study import plateau
from bioknow.study.plot import counts_on, load_rows, present, si, write_figure

MORRIS_BITS_PER_PARAM = 3.6
GREY = "0.45"


def usable(rows: list[dict]) -> list[dict]:
    """The done, unquantized random-sequence rows with memorized and dataset bits."""
    needed = ("status", "quantize", "variant", "model", "bits", "bits_clamped", "bits_max", "P")
    columns = set().union(*(row.keys() for row in rows)) if rows else set()
    missing = [c for c in needed if c not in columns]
    if missing:
        raise InputError(f"runs.parquet has no column {', '.join(missing)}")
    kept = [
        row
        for row in rows
        if row["status"] == "done"
        and row["quantize"] == "none"
        and row["variant"] == "random"
        and all(present(row.get(c)) for c in needed[3:])
        and row["bits_max"] > 0
    ]
    if not kept:
        raise InputError(
            f"no usable rows for the memorization figure ({len(rows)} rows): it needs "
            "random-sequence runs with status done, quantize none and their bits"
        )
    return kept


def draw_series(ax, rows: list[dict], colour, label: str, floor: float, fit: dict) -> None:
    """One model's points (sorted by dataset bits), their clamped twins and its plateau."""
    rows = sorted(rows, key=lambda r: r["bits_max"])
    xs = [r["bits_max"] for r in rows]
    ys = [r["bits"] if r["bits"] > 0 else floor for r in rows]
    ax.plot(xs, ys, color=colour, marker="o", markersize=5, linewidth=1.5, label=label)
    clamped = [r["bits_clamped"] if r["bits_clamped"] > 0 else floor for r in rows]
    ax.plot(
        xs, clamped, linestyle="none", marker="o", markersize=8, markerfacecolor="none",
        color=colour, gid="clamped",
    )  # fmt: skip
    P = min(r["P"] for r in rows)
    ax.axhline(MORRIS_BITS_PER_PARAM * P, color=colour, linestyle=":", linewidth=0.8)
    if fit.get("capacity") is None:
        return
    right = max(xs) * 1.5
    ax.plot(
        [fit["knee"], right], [fit["capacity"]] * 2, color=colour, linestyle="--", gid="plateau"
    )
    if fit.get("interval"):
        low, high = fit["interval"]
        ax.fill_between([fit["knee"], right], low, high, color=colour, alpha=0.15, linewidth=0)


def figure(rows: list[dict]) -> Figure:
    """The memorization figure of a sweep's rows (an Agg canvas, no display)."""
    rows = usable(rows)
    fits = {tuple(f[k] for k in plateau.SERIES): f for f in plateau.capacities(columns(rows))}
    shown = [v for r in rows for v in (r["bits"], r["bits_clamped"], r["bits_max"]) if v > 0]
    floor = min(shown) / 3
    fig = Figure(figsize=(8, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    cmap = matplotlib.colormaps["viridis"]
    order = sorted(fits, key=lambda k: (min(r["P"] for r in rows if series(r) == k), k))
    for i, key in enumerate(order):
        colour = cmap(0.85 * i / max(1, len(order) - 1))
        mine = [r for r in rows if series(r) == key]
        fit = fits[key]
        label = f"{key[0]} (P = {si(min(r['P'] for r in mine))}), {key[1]} exposures"
        if fit.get("capacity") is not None:
            label += f": plateau {si(fit['capacity'])} bits = {fit['R']:.2f} bits/P"
        draw_series(ax, mine, colour, label, floor, fit)
    low = min(r["bits_max"] for r in rows) / 1.5
    high = max(r["bits_max"] for r in rows) * 1.5
    ax.plot([low, high], [low, high], color=GREY, linestyle="-", linewidth=0.8, zorder=1)
    ax.set_xscale("log")
    ax.set_yscale("log", nonpositive="mask")
    ax.set_xlim(low, high)
    ax.set_ylim(bottom=floor)
    counts_on(ax.xaxis)
    counts_on(ax.yaxis)
    ax.set_xlabel("dataset size: N S log2 V bits", fontsize=11)
    ax.set_ylabel("memorized bits", fontsize=11)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    keys = [
        (Line2D([], [], color=GREY, linewidth=0.8), "all of the dataset memorized"),
        (Line2D([], [], color=GREY, linestyle="--"), "plateau (capacity), 95% interval shaded"),
        (Line2D([], [], color=GREY, linestyle=":"), "3.6 bits per parameter (Morris et al.)"),
        (
            Line2D([], [], color=GREY, marker="o", markerfacecolor="none", linestyle=""),
            "hollow: each sequence clamped at 0",
        ),
    ]
    ax.legend(
        handles + [k[0] for k in keys], labels + [k[1] for k in keys], fontsize=8,
        loc="upper center", bbox_to_anchor=(0.5, -0.13), frameon=False,
    )  # fmt: skip
    fig.set_size_inches(8, 5.2 + 0.17 * (len(handles) + len(keys)))
    lengths = sorted({(r.get("length"), r.get("symbols")) for r in rows})
    shape = " / ".join(f"S = {s}, V = {v}" for s, v in lengths)
    fig.suptitle(f"Memorization of random sequences\n{shape}", fontsize=12)
    return fig


def series(row: dict) -> tuple:
    return tuple(row.get(k) for k in plateau.SERIES)


def columns(rows: list[dict]) -> dict[str, list]:
    """Rows as columns (what `plateau.capacities` takes)."""
    names = list(dict.fromkeys(k for r in rows for k in r))
    return {k: [r.get(k) for r in rows] for k in names}


def plot(sweep_dir, out, dpi: float = 150) -> Path:
    """Draw the memorization figure of DIR/runs.parquet into `out` (.png, .pdf, .svg),
    atomically; nothing is written when anything fails. Returns its path."""
    return write_figure(lambda: figure(load_rows(sweep_dir)), out, dpi)
