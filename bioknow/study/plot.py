"""Figures of a sweep's results table, DIR/runs.parquet (one row per run and quantization).

Four kinds (`KINDS`), all drawn from rows with status "done":

- "capacity" (Figure 1(a) of the paper): two panels. Left, bits stored against parameters P
  on log-log axes, one colour per N, with the 1 and 2 bits per parameter lines and each N's
  maximum (`bits_max`) as a thin horizontal line. Right, R against P, scaled to the data,
  with R = 1 and R = 2 where the data come near them. Unquantized rows only.
- "exposures": R against exposures, one colour per model (ordered by P): how many times each
  biography must be seen before a model reaches its capacity. Unquantized rows only.
- "architecture": R against P, one colour per family (gpt2, llama, mistral, ...).
  Unquantized rows only.
- "quantized": R against P, one colour per quantize setting (none, int8, int4).

Bits and R are the clamped values (`bits_clamped`, `R_clamped`: each term of the bits
clamped at 0, docs/design.md §7). A run with a negative term is drawn with a hollow marker;
on a logarithmic axis a run with no bits stored at all sits, hollow, on the bottom edge.
Where the table has 95% intervals (`R_ci95_low`, `R_ci95_high`, `bits_ci95_low`, ...: a
sampled evaluation) they are drawn as error bars. Besides its colour, a series is split by
every other experimental factor that takes more than one value (variant, N, exposures,
family), drawn with its own marker and line style and named in the legend; the title names
the values of those factors. Rows repeating one point of a series (seeds) are reduced to
the one of highest y: the capacity a configuration reaches.

The figure is written in the format its file name says: .png, .pdf or .svg.
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
from matplotlib.ticker import LogFormatter, NullFormatter, ScalarFormatter
from matplotlib.transforms import offset_copy

from bioknow.base import atomic
from bioknow.base.errors import InputError

KINDS = ("capacity", "exposures", "architecture", "quantized")
FORMATS = ("png", "pdf", "svg")
DPI_RANGE = (50, 1200)
LEGEND_LINE = 0.17  # inches a line of a legend below a panel takes

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
COMPARED = {
    "exposures": "numbers of exposures",
    "family": "model families",
    "quantize": "quantizations",
}
RAW = {"bits_clamped": "bits", "R_clamped": "R"}  # the unclamped value of each y column
GREY = "0.45"


class NothingToCompare(Exception):
    """The figure would compare a single value: worth a warning, not a figure."""


@dataclass(frozen=True)
class Spec:
    """What one kind of figure draws: x axis (log scale), the column that picks a series'
    colour, the columns that may split a series further, which rows it uses, and the column
    whose values it compares (a figure of one value compares nothing)."""

    heading: str
    x: str
    colour: str
    split: tuple[str, ...]
    unquantized: bool
    size: tuple[float, float]
    compares: str | None = None


SPECS = {
    "capacity": Spec(
        "Knowledge capacity",
        "P",
        "n",
        ("variant", "dataset", "exposures", "family"),
        True,
        (12, 4.4),
    ),
    "exposures": Spec(
        "Capacity ratio against exposures",
        "exposures",
        "model",
        ("variant", "n", "dataset"),
        True,
        (8, 4.8),
        "exposures",
    ),
    "architecture": Spec(
        "Capacity ratio by architecture",
        "P",
        "family",
        ("variant", "exposures", "n", "dataset"),
        True,
        (8, 4.8),
        "family",
    ),
    "quantized": Spec(
        "Capacity ratio after quantization",
        "P",
        "quantize",
        ("variant", "exposures", "family", "n", "dataset"),
        False,
        (8, 4.8),
        "quantize",
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
    if column == "dataset":
        return "max " + " / ".join(si(v) for v in values) + " bits" if any(values) else ""
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


class CountFormatter(LogFormatter):
    """Log-axis tick labels as counts (200K, 1.5M) on the ticks LogFormatter labels."""

    def __call__(self, x, pos=None):
        return si(x) if super().__call__(x, pos) else ""


def counts_on(axis) -> None:
    """Write a log axis' ticks as counts: 100K, 200K, 1M rather than 10^5, 2x10^5."""
    axis.set_major_formatter(CountFormatter())
    axis.set_minor_formatter(CountFormatter(labelOnlyBase=False))


def present(value) -> bool:
    """Neither null nor NaN nor infinite."""
    return value is not None and not (isinstance(value, float) and not math.isfinite(value))


def clamped(row: dict) -> bool:
    """Whether a term of the run's bits is negative, so that its clamped R exceeds the raw
    R (docs/design.md §7)."""
    raw = row.get("R")
    return present(raw) and raw < row["R_clamped"] - 1e-9 * max(1.0, abs(raw))


def interval(row: dict, y: str) -> tuple[float, float] | None:
    """The run's 95% interval of y (a sampled evaluation), or None: absent, or the run is
    clamped (the interval is of the raw value)."""
    name = f"{RAW[y]}_ci95"
    low, high = row.get(f"{name}_low"), row.get(f"{name}_high")
    if present(low) and present(high) and not clamped(row):
        return low, high
    return None


def usable(rows: list[dict], kind: str, ys: tuple[str, ...]) -> list[dict]:
    """The finished rows that a figure of `kind` can draw: every column it uses is present,
    x is positive, and (except for "quantized") the model is unquantized."""
    spec = spec_of(kind)
    extra = ("P",) if spec.colour == "model" else ()
    split = [c for c in spec.split if c != "dataset"]  # derived, see datasets()
    needed = tuple(dict.fromkeys(("status", "quantize", spec.x, *ys, spec.colour, *split, *extra)))
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
    return datasets(kept)


def datasets(rows: list[dict]) -> list[dict]:
    """The rows with a `dataset` factor: where some variant and N has several datasets
    (bioD of several shapes, other field lists), each row's maximum bits tell them apart;
    else "" (no factor)."""
    known = [row["bits_max"] if present(row.get("bits_max")) else 0.0 for row in rows]
    maxima: dict[tuple, set] = {}
    for row, bits_max in zip(rows, known, strict=True):
        maxima.setdefault((row["variant"], row["n"]), set()).add(bits_max)
    several = any(len(values) > 1 for values in maxima.values())
    return [
        {**row, "dataset": bits_max if several else ""}
        for row, bits_max in zip(rows, known, strict=True)
    ]


def compared(rows: list[dict], kind: str) -> None:
    """NothingToCompare when a comparing figure has a single value to compare."""
    column = spec_of(kind).compares
    values = {row[column] for row in rows} if column else set()
    if column and len(values) < 2:
        raise NothingToCompare(
            f"the {kind} figure compares {COMPARED[column]}, and the usable runs have only "
            f"one ({describe(column, values)}): no figure written (--kind capacity shows R "
            "against P)"
        )


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
    """The legend text of a colour; a model's also gives its size P in the series' `rows`
    (P depends on N through the token ids the corpus uses)."""
    if column == "model":
        sizes = sorted({r["P"] for r in rows if r["model"] == value})
        size = si(sizes[0]) if len(sizes) == 1 else f"{si(sizes[0])} to {si(sizes[-1])}"
        return f"{value} (P = {size})"
    return describe(column, [value])


def series_rows(rows: list[dict], spec: Spec, y: str, varying: list[str]) -> dict:
    """Each series' rows by x, (colour value, *varying factors) -> {x: row}: where x
    repeats (seeds), the row of highest y."""
    points: dict[tuple, dict] = {}
    for row in rows:
        series = points.setdefault((row[spec.colour], *(row[c] for c in varying)), {})
        best = series.get(row[spec.x])
        if best is None or row[y] > best[y]:
            series[row[spec.x]] = row
    return points


def draw(ax: Axes, rows: list[dict], spec: Spec, y: str, floor: float | None = None) -> dict:
    """One line per series (points sorted by x; the best y where x repeats), labelled for
    the legend, its clamped runs hollow and its intervals as error bars (`floor`: where a
    log axis draws runs with y <= 0). Returns the colour of each value of the colour
    column."""
    palette = colours(rows, spec.colour)
    varying = [c for c in spec.split if len({row[c] for row in rows}) > 1]
    counts = Counter(tuple(row[c] for c in varying) for row in rows)
    combos = sorted(counts, key=lambda combo: (-counts[combo], combo))  # the most rows: solid
    points = series_rows(rows, spec, y, varying)
    drawn = 0
    for value, colour in palette.items():
        for i, combo in enumerate(combos):
            series = points.get((value, *combo))
            if not series:
                continue
            picked = [series[x] for x in sorted(series)]
            label = ", ".join(
                [colour_label(spec.colour, value, picked)]
                + [describe(c, [v]) for c, v in zip(varying, combo, strict=True)]
            )
            # each series' hollow markers a size larger: clamped runs that coincide (R = 0)
            # stay visible as nested outlines
            size = 6 + 2 * (drawn % 4)
            style = {"color": colour, "marker": MARKERS[i % len(MARKERS)], "size": size}
            drawn += 1
            ax.plot(
                [row[spec.x] for row in picked],
                [row[y] for row in picked],
                color=colour,
                marker=style["marker"],
                linestyle=LINESTYLES[i % len(LINESTYLES)],
                markersize=5,
                linewidth=1.5,
                label=label,
                markevery=[j for j, row in enumerate(picked) if not clamped(row)],  # hollow
            )
            mark(ax, picked, spec.x, y, style, floor)
    ax.set_xscale("log")
    ax.margins(x=0.08)
    if spec.x == "exposures":  # few values, written plainly
        ax.set_xticks(sorted({row[spec.x] for row in rows}), minor=False)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        counts_on(ax.xaxis)
    ax.set_xlabel(LABELS[spec.x], fontsize=11)
    ax.set_ylabel(LABELS[y], fontsize=11)
    ax.tick_params(labelsize=9)
    ax.grid(True, alpha=0.3)
    return palette


def mark(ax: Axes, picked: list[dict], x: str, y: str, style: dict, floor: float | None):
    """Over one series: hollow markers on its clamped runs (at `floor` where y <= 0 on a
    log axis), error bars where a run has a 95% interval."""
    hollow = [row for row in picked if clamped(row)]
    if hollow:
        ys = [row[y] if floor is None or row[y] > 0 else floor for row in hollow]
        ax.plot(
            [row[x] for row in hollow], ys, linestyle="none", color=style["color"],
            marker=style["marker"], markersize=style["size"], markerfacecolor="none",
            markeredgewidth=1.2, zorder=3, clip_on=False, gid="clamped",
        )  # fmt: skip
    bars = [(row[x], row[y], interval(row, y)) for row in picked if interval(row, y)]
    if bars:
        xs, ys, spans = zip(*bars, strict=True)
        below = [v - low for v, (low, _) in zip(ys, spans, strict=True)]
        above = [high - v for v, (_, high) in zip(ys, spans, strict=True)]
        container = ax.errorbar(
            xs, ys, yerr=[below, above], fmt="none", ecolor=style["color"], capsize=3
        )
        for artist in (*container.lines[1], *container.lines[2]):
            artist.set_gid("ci95")


def key_entries(rows: list[dict], y: str, floor: bool) -> list[tuple[Line2D, str]]:
    """Legend entries for the marks a panel carries: hollow (clamped) runs, runs on the
    bottom edge (no bits stored, a log axis), 95% intervals."""
    entries = []
    if any(clamped(row) for row in rows):
        hollow = Line2D([], [], color=GREY, marker="o", markerfacecolor="none", linestyle="")
        entries.append((hollow, "hollow: a bits term < 0, clamped at 0"))
    if floor and any(row[y] <= 0 for row in rows):
        edge = Line2D([], [], color=GREY, marker="o", markerfacecolor="none", linestyle="")
        entries.append((edge, "on the bottom edge: no bits stored"))
    if any(interval(row, y) for row in rows):
        bar = Line2D([], [], color=GREY, marker="|", markersize=10, linestyle="")
        entries.append((bar, "95% interval (sampled evaluation)"))
    return entries


def ratio_axis(ax: Axes, rows: list[dict]) -> None:
    """Scale R to the data (and its intervals). The lines R = 1 and R = 2 where the data
    reach half a bit per parameter, else a legend entry saying that they lie above."""
    spans = [interval(row, "R_clamped") or (row["R_clamped"],) * 2 for row in rows]
    low = min(0.0, *(s[0] for s in spans))
    high = max(s[1] for s in spans)
    if high >= 0.5:
        for r, style, text in ((1, "--", "1 bit / param"), (2, ":", "2 bits / param")):
            ax.axhline(r, color=GREY, linestyle=style, zorder=1, gid=f"R={r}", label=text)
        high = max(high, 2.0)
    else:
        high = high if high > 0 else 0.05  # nothing stored anywhere
        ax.plot([], [], linestyle="none", gid="note", label="(R = 1 and 2: above this range)")
    pad = 0.06 * (high - low)
    ax.set_ylim(low - pad, high + 2 * pad)


def title(rows: list[dict], spec: Spec) -> str:
    """The heading and the values of the factors not on an axis or in the colours."""
    parts = [describe(c, {row[c] for row in rows}) for c in spec.split]
    return f"{spec.heading}\n{', '.join(part for part in parts if part)}"


def bits_panel(ax: Axes, rows: list[dict], spec: Spec) -> tuple[list, list]:
    """Figure 1(a), left: bits against P (log-log) with bits = P, bits = 2P and each N's
    maximum; runs with no bits stored on the bottom edge. Returns its legend's handles and
    labels."""
    lo = min(row["P"] for row in rows) / 1.5
    hi = max(row["P"] for row in rows) * 1.5
    maxima = {}
    for row in rows:
        if present(row.get("bits_max")):
            key = (row["variant"], row["n"], row["dataset"])
            maxima[key] = max(maxima.get(key, -math.inf), row["bits_max"])
    shown = [v for v in (*maxima.values(), *(row["bits_clamped"] for row in rows)) if v > 0]
    floor = min([lo, *shown]) / 3
    palette = draw(ax, rows, spec, "bits_clamped", floor)
    ax.set_yscale("log", nonpositive="mask")
    counts_on(ax.yaxis)
    for slope, style, text in ((1, "--", "1 bit / param"), (2, ":", "2 bits / param")):
        ax.plot([lo, hi], [slope * lo, slope * hi], color=GREY, linestyle=style, label=text)
    ax.set_xlim(lo, hi)
    for (variant, n, dataset), bits_max in sorted(maxima.items()):
        gid = f"bits_max:{variant}:{n}" + (f":{dataset:g}" if dataset else "")
        ax.axhline(bits_max, color=palette[n], linewidth=0.8, alpha=0.7, gid=gid)
    ax.set_ylim(bottom=floor)
    handles, labels = ax.get_legend_handles_labels()
    if maxima:
        handles.append(Line2D([], [], color=GREY, linewidth=0.8))
        labels.append("max bits of each N (thin)")
    for handle, label in key_entries(rows, "bits_clamped", floor=True):
        handles.append(handle)
        labels.append(label)
    ax.set_title("bits stored", fontsize=11)
    return handles, labels


def ratio_panel(ax: Axes, rows: list[dict], spec: Spec) -> tuple[list, list]:
    """R against P (or exposures), scaled to the data. Returns its legend's handles and
    labels: the series and the key to the marks."""
    draw(ax, rows, spec, "R_clamped")
    ratio_axis(ax, rows)
    handles, labels = ax.get_legend_handles_labels()
    for handle, label in key_entries(rows, "R_clamped", floor=False):
        handles.append(handle)
        labels.append(label)
    return handles, labels


def legend_below(ax: Axes, handles: list, labels: list) -> int:
    """The panel's legend under its x axis, where it hides no data, in two columns when
    long and narrow enough. Returns the number of rows it takes."""
    columns = 2 if len(labels) > 6 and max(map(len, labels)) <= 36 else 1
    under = offset_copy(ax.transAxes, fig=ax.figure, y=-34, units="points")  # below the label
    ax.legend(
        handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0),
        bbox_transform=under, ncol=columns, frameon=False,
    )  # fmt: skip
    return math.ceil(len(labels) / columns)


def figure(rows: list[dict], kind: str = "capacity") -> Figure:
    """Build the figure of `kind` from the rows of runs.parquet (an Agg canvas, no display).
    NothingToCompare when the kind compares a single value."""
    spec = spec_of(kind)
    ys = ("bits_clamped", "R_clamped") if kind == "capacity" else ("R_clamped",)
    rows = usable(rows, kind, ys)
    compared(rows, kind)
    fig = Figure(figsize=spec.size, layout="constrained")
    FigureCanvasAgg(fig)
    if kind == "capacity":
        left, right = fig.subplots(1, 2)
        legends = (bits_panel(left, rows, spec), ratio_panel(right, rows, spec))
        right.set_xlim(left.get_xlim())
        right.set_title("capacity ratio", fontsize=11)
        lines = max(
            legend_below(ax, *pair) for ax, pair in zip((left, right), legends, strict=True)
        )
        fig.set_size_inches(spec.size[0], spec.size[1] + LEGEND_LINE * lines)
    else:
        ax = fig.subplots()
        ax.legend(
            *ratio_panel(ax, rows, spec), fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1),
            borderaxespad=0,
        )  # fmt: skip
    fig.suptitle(title(rows, spec), fontsize=12)
    return fig


def figure_format(out: Path) -> str:
    """The format a file name asks for (its extension), or InputError."""
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        named = f"extension {out.suffix!r}" if out.suffix else "no extension"
        choices = ", ".join(f".{f}" for f in FORMATS)
        raise InputError(f"{out}: {named}; name the figure file {choices}")
    return fmt


def plot(sweep_dir, out, kind: str = "capacity", dpi: float = 150) -> Path:
    """Draw the `kind` figure of DIR/runs.parquet into `out`, in the format its extension
    names (.png, .pdf, .svg), written atomically (nothing is written when anything fails).
    Returns its path. NothingToCompare (nothing written) when the kind compares a single
    value."""
    spec_of(kind)
    return write_figure(lambda: figure(load_rows(sweep_dir), kind), out, dpi)


def write_figure(draw, out, dpi: float) -> Path:
    """Check `out` and `dpi`, draw the figure (`draw()`), and write it to `out` in the
    format its extension names, atomically; nothing is written when anything fails."""
    out = Path(out)
    if out.is_dir():
        raise InputError(f"{out}: is a folder, not a file name for the figure")
    fmt = figure_format(out)
    low, high = DPI_RANGE
    if not (isinstance(dpi, (int, float)) and math.isfinite(dpi) and low <= dpi <= high):
        raise InputError(f"--dpi must be between {low} and {high}, got {dpi!r}")
    buf = io.BytesIO()
    draw().savefig(buf, format=fmt, dpi=dpi)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(out, buf.getvalue())
    return out
