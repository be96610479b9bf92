"""Figures of a sweep's results table, DIR/runs.parquet (one row per run and quantization).

Four kinds (`KINDS`), all drawn from rows with status "done":

- "capacity" (Figure 1(a) of the paper): two panels. Left, bits stored against parameters P
  on log-log axes, one colour per N, with the 1 and 2 bits per parameter lines and each N's
  maximum (`bits_max`) as a thin horizontal line. Right, R against P with R = 1 and R = 2.
  Unquantized rows only.
- "exposures": R against exposures, one colour per model (ordered by P): how many times each
  biography must be seen before a model reaches its capacity. Unquantized rows only.
- "architecture": R against P, one colour per family (gpt2, llama, mistral, ...).
  Unquantized rows only.
- "quantized": R against P, one colour per quantize setting (none, int8, int4).

Bits and R are the clamped values (`bits_clamped`, `R_clamped`). Besides its colour, a
series is split by every other experimental factor that takes more than one value (variant,
N, exposures, family), drawn with its own marker and line style and named in the legend; the
title names the values of those factors. Rows repeating one point of a series (seeds) are
reduced to their maximum: the capacity a configuration reaches.
"""

import io
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import pyarrow as pa
import pyarrow.parquet as pq
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bioknow import atomic
from bioknow.errors import InputError

KINDS = ("capacity", "exposures", "architecture", "quantized")

# Fixed colours for categories, the same in every figure; other values follow in order.
KNOWN = {
    "family": ("gpt2", "llama", "mistral", "gpt2-mlp4", "gpt2-nomlp", "gpt2-moe"),
    "quantize": ("none", "int8", "int4"),
}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")
LABELS = {
    "P": "parameters P",
    "exposures": "exposures (times each biography is seen)",
    "bits_clamped": "bits stored",
    "R_clamped": "bits per parameter R",
}


@dataclass(frozen=True)
class Spec:
    """What one kind of figure draws: x axis (log scale), the column that picks a series'
    colour, the columns that may split a series further, and which rows it uses."""

    heading: str
    x: str
    colour: str
    split: tuple[str, ...]
    unquantized: bool
    size: tuple[float, float]


SPECS = {
    "capacity": Spec(
        "Knowledge capacity", "P", "n", ("variant", "exposures", "family"), True, (12, 4.8)
    ),
    "exposures": Spec(
        "Capacity ratio against exposures", "exposures", "model", ("variant", "n"), True, (8, 4.8)
    ),
    "architecture": Spec(
        "Capacity ratio by architecture",
        "P",
        "family",
        ("variant", "exposures", "n"),
        True,
        (8, 4.8),
    ),
    "quantized": Spec(
        "Capacity ratio after quantization",
        "P",
        "quantize",
        ("variant", "exposures", "family", "n"),
        False,
        (8, 4.8),
    ),
}


def si(value: float) -> str:
    """A count in three significant figures with K, M, B: 10000 -> "10K", 1500 -> "1.5K"."""
    value = float(f"{value:.3g}")
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def describe(column: str, values) -> str:
    """One or more values of a column as legend or title text: "N = 10K / 20K"."""
    values = sorted(values)
    if column == "n":
        return "N = " + " / ".join(si(v) for v in values)
    if column == "exposures":
        return " / ".join(f"{v:g}" for v in values) + " exposures"
    if column == "quantize":
        return " / ".join("unquantized" if v == "none" else v for v in values)
    return " / ".join(str(v) for v in values)


def spec_of(kind: str) -> Spec:
    """The spec of a figure kind, or InputError naming the kinds."""
    if kind not in SPECS:
        raise InputError(f"unknown plot kind {kind!r}; choose one of {', '.join(KINDS)}")
    return SPECS[kind]


def load_rows(sweep_dir) -> list[dict]:
    """The rows of DIR/runs.parquet, as dicts."""
    path = Path(sweep_dir) / "runs.parquet"
    if not path.is_file():
        raise InputError(f"{path}: no such file (is {sweep_dir} a sweep folder?)")
    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(f"{path}: not a readable parquet table ({reason})") from None


def present(value) -> bool:
    """Neither null nor NaN nor infinite."""
    return value is not None and not (isinstance(value, float) and not math.isfinite(value))


def usable(rows: list[dict], kind: str, ys: tuple[str, ...]) -> list[dict]:
    """The finished rows that a figure of `kind` can draw: every column it uses is present,
    x is positive, and (except for "quantized") the model is unquantized."""
    spec = spec_of(kind)
    extra = ("P",) if spec.colour == "model" else ()
    needed = tuple(
        dict.fromkeys(("status", "quantize", spec.x, *ys, spec.colour, *spec.split, *extra))
    )
    columns = set().union(*(row.keys() for row in rows)) if rows else set(needed)
    missing = [c for c in needed if c not in columns]
    if missing:
        raise InputError(f"runs.parquet has no column {', '.join(missing)}")
    done = [row for row in rows if row.get("status") == "done"]
    kept = [
        row
        for row in done
        if all(present(row.get(c)) for c in needed)
        and row[spec.x] > 0
        and (row["quantize"] == "none" or not spec.unquantized)
    ]
    if not kept:
        quantize = ", quantize none" if spec.unquantized else ""
        raise InputError(
            f"no usable rows for the {kind} figure ({len(rows)} rows, {len(done)} done): "
            f"it needs status done{quantize} and values of {', '.join(needed)}"
        )
    return kept


def colours(rows: list[dict], column: str) -> dict:
    """A colour per value of `column`, in legend order: N and models (by size) along a
    sequential colour map, categories in fixed colours."""
    if column in KNOWN:
        values = {row[column] for row in rows}
        every = (*KNOWN[column], *sorted(values - set(KNOWN[column])))
        return {v: f"C{i % 10}" for i, v in enumerate(every) if v in values}
    if column == "model":
        size = {}
        for row in rows:
            size[row["model"]] = min(size.get(row["model"], math.inf), row["P"])
        order = sorted(size, key=lambda m: (size[m], m))
    else:
        order = sorted({row[column] for row in rows})
    cmap = matplotlib.colormaps["viridis"]
    return {v: cmap(0.85 * i / max(1, len(order) - 1)) for i, v in enumerate(order)}


def colour_label(column: str, value, rows: list[dict]) -> str:
    """The legend text of a colour; a model's also gives its size."""
    if column == "model":
        return f"{value} (P = {si(min(r['P'] for r in rows if r['model'] == value))})"
    return describe(column, [value])


def draw(ax: Axes, rows: list[dict], spec: Spec, y: str) -> dict:
    """One line per series (points sorted by x; the best y where x repeats), labelled for
    the legend. Returns the colour of each value of the colour column."""
    palette = colours(rows, spec.colour)
    varying = [c for c in spec.split if len({row[c] for row in rows}) > 1]
    counts = Counter(tuple(row[c] for c in varying) for row in rows)
    combos = sorted(counts, key=lambda combo: (-counts[combo], combo))  # the most rows: solid
    points: dict[tuple, dict] = {}
    for row in rows:
        series = points.setdefault((row[spec.colour], *(row[c] for c in varying)), {})
        series[row[spec.x]] = max(series.get(row[spec.x], -math.inf), row[y])
    for value, colour in palette.items():
        for i, combo in enumerate(combos):
            series = points.get((value, *combo))
            if not series:
                continue
            xs = sorted(series)
            label = ", ".join(
                [colour_label(spec.colour, value, rows)]
                + [describe(c, [v]) for c, v in zip(varying, combo, strict=True)]
            )
            ax.plot(
                xs,
                [series[x] for x in xs],
                color=colour,
                marker=MARKERS[i % len(MARKERS)],
                linestyle=LINESTYLES[i % len(LINESTYLES)],
                markersize=5,
                linewidth=1.5,
                label=label,
            )
    ax.set_xscale("log")
    ax.set_xlabel(LABELS[spec.x], fontsize=11)
    ax.set_ylabel(LABELS[y], fontsize=11)
    ax.tick_params(labelsize=9)
    ax.grid(True, alpha=0.3)
    return palette


def ratio_lines(ax: Axes) -> None:
    """R = 1 and R = 2 as grey horizontal lines, named at the left edge; R starts at 0."""
    for r, style, text in ((1, "--", "1 bit / param"), (2, ":", "2 bits / param")):
        ax.axhline(r, color="0.45", linestyle=style, linewidth=1.2, zorder=1, gid=f"R={r}")
        ax.text(
            0.01, r, text, transform=ax.get_yaxis_transform(), va="bottom", fontsize=8, color="0.35"
        )
    ax.set_ylim(bottom=0)


def title(rows: list[dict], spec: Spec) -> str:
    """The heading and the values of the factors not on an axis or in the colours."""
    parts = [describe(c, {row[c] for row in rows}) for c in spec.split]
    return f"{spec.heading}\n{', '.join(parts)}"


def capacity_panels(fig: Figure, rows: list[dict], spec: Spec) -> None:
    """Figure 1(a): bits against P (log-log) with bits = P, bits = 2P and each N's maximum;
    R against P beside it."""
    left, right = fig.subplots(1, 2)
    palette = draw(left, rows, spec, "bits_clamped")
    left.set_yscale("log", nonpositive="mask")
    lo = min(row["P"] for row in rows) / 1.5
    hi = max(row["P"] for row in rows) * 1.5
    left.plot(
        [lo, hi], [lo, hi], color="0.45", linestyle="--", linewidth=1.2, label="1 bit / param"
    )
    left.plot(
        [lo, hi],
        [2 * lo, 2 * hi],
        color="0.45",
        linestyle=":",
        linewidth=1.4,
        label="2 bits / param",
    )
    left.set_xlim(lo, hi)
    maxima = {}
    for row in rows:
        if present(row.get("bits_max")):
            key = (row["variant"], row["n"])
            maxima[key] = max(maxima.get(key, -math.inf), row["bits_max"])
    for (variant, n), bits_max in sorted(maxima.items()):
        left.axhline(
            bits_max, color=palette[n], linewidth=0.8, alpha=0.7, gid=f"bits_max:{variant}:{n}"
        )
    handles, labels = left.get_legend_handles_labels()
    if maxima:
        handles.append(Line2D([], [], color="0.45", linewidth=0.8))
        labels.append("max bits of each N (thin)")
    left.legend(handles, labels, fontsize=8, loc="best")
    left.set_title("bits stored", fontsize=11)

    draw(right, rows, spec, "R_clamped")
    ratio_lines(right)
    right.set_title("capacity ratio", fontsize=11)
    fig.suptitle(title(rows, spec), fontsize=12)


def figure(rows: list[dict], kind: str = "capacity") -> Figure:
    """Build the figure of `kind` from the rows of runs.parquet (an Agg canvas, no display)."""
    spec = spec_of(kind)
    ys = ("bits_clamped", "R_clamped") if kind == "capacity" else ("R_clamped",)
    rows = usable(rows, kind, ys)
    fig = Figure(figsize=spec.size)
    FigureCanvasAgg(fig)
    if kind == "capacity":
        capacity_panels(fig, rows, spec)
    else:
        ax = fig.subplots()
        draw(ax, rows, spec, "R_clamped")
        ratio_lines(ax)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
        fig.suptitle(title(rows, spec), fontsize=12)
    fig.tight_layout()
    return fig


def plot(sweep_dir, out_png, kind: str = "capacity", dpi: float = 150) -> Path:
    """Draw the `kind` figure of DIR/runs.parquet into the PNG file `out_png`, written
    atomically (nothing is written when anything fails). Returns its path."""
    spec_of(kind)
    out = Path(out_png)
    if out.is_dir():
        raise InputError(f"{out}: is a folder, not a file name for the PNG")
    if not (isinstance(dpi, (int, float)) and math.isfinite(dpi) and dpi > 0):
        raise InputError(f"dpi must be a positive number, got {dpi!r}")
    fig = figure(load_rows(sweep_dir), kind)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(out, buf.getvalue())
    return out
