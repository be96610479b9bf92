from pathlib import Path

import matplotlib.image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bioknow import cli
from bioknow.base.errors import InputError
from bioknow.study import plot

NS = (10_000, 20_000, 50_000)
GPT2 = {"gpt2-1-1": 100_000, "gpt2-2-2": 300_000, "gpt2-4-4": 1_000_000, "gpt2-8-8": 3_000_000}
LLAMA = {"llama-1-1": 120_000, "llama-4-4": 1_100_000}
COLUMNS = (
    "point status variant n exposures model family n_layer n_head seed quantize P P_total "
    "bits bits_max R R_max bits_clamped R_clamped steps tokens final_loss wall_s tokens_per_s"
).split()


def bits_max(n):
    return 50.0 * n


def row(n, model, P, *, exposures=1000, quantize="none", seed=0, keep=1.0, status="done"):
    """One row of runs.parquet: a model storing min(2P, bits_max) bits, times `keep`."""
    bits = keep * min(2.0 * P, bits_max(n))
    values = {
        "point": f"{model}-n{n}-e{exposures}-s{seed}",
        "status": status,
        "variant": "bioS",
        "n": n,
        "exposures": exposures,
        "model": model,
        "family": model.rsplit("-", 2)[0],
        "n_layer": int(model.split("-")[-2]),
        "n_head": int(model.split("-")[-1]),
        "seed": seed,
        "quantize": quantize,
        "P": P,
        "P_total": P + 50_000,
        "bits": bits,
        "bits_max": bits_max(n),
        "R": bits / P,
        "R_max": bits_max(n) / P,
        "bits_clamped": bits,
        "R_clamped": bits / P,
        "steps": 1000,
        "tokens": 1_000_000,
        "final_loss": 1.0,
        "wall_s": 10.0,
        "tokens_per_s": 1e5,
    }
    if status != "done":
        values.update(dict.fromkeys(("bits", "R", "bits_clamped", "R_clamped", "final_loss")))
    return values


def capacity_rows():
    """gpt2 at three N, 1000 exposures; a worse second seed, quantized and failed rows."""
    rows = [row(n, m, P) for n in NS for m, P in GPT2.items()]
    rows.append(row(10_000, "gpt2-2-2", GPT2["gpt2-2-2"], seed=1, keep=0.5))
    rows += [row(10_000, m, P, quantize="int8", keep=0.98) for m, P in GPT2.items()]
    rows += [row(10_000, m, P, quantize="int4", keep=0.6) for m, P in GPT2.items()]
    rows.append(row(50_000, "gpt2-16-16", 10_000_000, status="failed"))
    return rows


def all_rows():
    """capacity_rows plus llama models and a 100-exposure run of each gpt2 model at N = 10K."""
    rows = capacity_rows()
    rows += [row(10_000, m, P) for m, P in LLAMA.items()]
    rows += [row(10_000, m, P, exposures=100, keep=0.5) for m, P in GPT2.items()]
    return rows


def write_sweep(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=pa.schema(schema_fields()))
    pq.write_table(table, folder / "runs.parquet")
    return folder


def schema_fields():
    ints = {"n", "exposures", "n_layer", "n_head", "seed", "P", "P_total", "steps", "tokens"}
    strings = {"point", "status", "variant", "model", "family", "quantize"}
    return [
        (c, pa.string() if c in strings else pa.int64() if c in ints else pa.float64())
        for c in COLUMNS
    ]


def lines(ax):
    """The data series of an axes, by legend label."""
    return {line.get_label(): line for line in ax.get_lines() if not line.get_gid()}


def by_gid(ax):
    return {line.get_gid(): line for line in ax.get_lines() if line.get_gid()}


def test_capacity_left_panel_plots_bits_per_n_with_reference_lines():
    fig = plot.figure(capacity_rows(), "capacity")
    left, right = fig.axes
    assert left.get_xscale() == "log" and left.get_yscale() == "log"
    assert right.get_xscale() == "log" and right.get_yscale() == "linear"
    series = lines(left)
    assert set(series) == {"N = 10K", "N = 20K", "N = 50K", "1 bit / param", "2 bits / param"}
    Ps = sorted(GPT2.values())
    for n in NS:
        line = series[f"N = {n // 1000}K"]
        # unquantized rows only; the better seed where P repeats; failed rows left out
        assert list(line.get_xdata()) == Ps
        assert list(line.get_ydata()) == [min(2.0 * P, bits_max(n)) for P in Ps]
    colours = {series[f"N = {n // 1000}K"].get_color() for n in NS}
    assert len(colours) == 3

    one, two = series["1 bit / param"], series["2 bits / param"]
    for line, slope in ((one, 1), (two, 2)):
        x, y = line.get_xdata(), line.get_ydata()
        assert list(y) == [slope * v for v in x]
        assert x[0] <= min(Ps) and x[-1] >= max(Ps)
        assert tuple(left.get_xlim()) == pytest.approx((x[0], x[-1]))

    maxima = by_gid(left)
    assert set(maxima) == {f"bits_max:bioS:{n}" for n in NS}
    for n in NS:
        line = maxima[f"bits_max:bioS:{n}"]
        assert list(line.get_ydata()) == [bits_max(n)] * 2
        assert line.get_color() == series[f"N = {n // 1000}K"].get_color()
    legend = [t.get_text() for t in left.get_legend().get_texts()]
    assert legend[:3] == ["N = 10K", "N = 20K", "N = 50K"] and "max bits" in legend[-1]
    title = fig.texts[0].get_text()
    assert "bioS" in title and "1000 exposures" in title


def test_capacity_right_panel_plots_r_with_lines_at_1_and_2():
    fig = plot.figure(capacity_rows(), "capacity")
    right = fig.axes[1]
    series = lines(right)
    Ps = sorted(GPT2.values())
    for n in NS:
        line = series[f"N = {n // 1000}K"]
        assert list(line.get_xdata()) == Ps
        assert list(line.get_ydata()) == pytest.approx([min(2.0 * P, bits_max(n)) / P for P in Ps])
    refs = by_gid(right)
    assert list(refs["R=1"].get_ydata()) == [1, 1] and list(refs["R=2"].get_ydata()) == [2, 2]
    low, high = right.get_ylim()
    assert -0.2 < low < 0 and 2 < high < 2.5  # R = 0 and R = 2 both inside, with a margin
    assert right.get_ylabel() == "bits per parameter R" and right.get_xlabel() == "parameters P"


def test_capacity_splits_other_factors_into_their_own_series():
    """llama rows at N = 10K are not joined to the gpt2 line of the same N."""
    rows = capacity_rows() + [row(10_000, m, P) for m, P in LLAMA.items()]
    left = plot.figure(rows, "capacity").axes[0]
    series = lines(left)
    gpt2, llama = series["N = 10K, gpt2"], series["N = 10K, llama"]
    assert list(llama.get_xdata()) == sorted(LLAMA.values())
    assert list(gpt2.get_xdata()) == sorted(GPT2.values())
    assert gpt2.get_color() == llama.get_color() and gpt2.get_marker() != llama.get_marker()
    assert "N = 20K, gpt2" in series and "N = 20K, llama" not in series


def test_exposures_figure_has_a_line_per_model_over_exposures():
    ax = plot.figure(all_rows(), "exposures").axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel().startswith("exposures")
    series = lines(ax)
    line = series["gpt2-4-4 (P = 1M), N = 10K"]
    assert list(line.get_xdata()) == [100, 1000]
    assert list(line.get_ydata()) == pytest.approx([0.5 * bits_max(10_000) / 1e6, 0.5])
    # legend in order of model size
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels.index("gpt2-1-1 (P = 100K), N = 10K") < labels.index("gpt2-8-8 (P = 3M), N = 10K")


def test_architecture_figure_colours_by_family():
    rows = capacity_rows() + [row(10_000, m, P) for m, P in LLAMA.items()]
    fig = plot.figure(rows, "architecture")
    ax = fig.axes[0]
    series = lines(ax)
    assert list(series["llama, N = 10K"].get_xdata()) == sorted(LLAMA.values())
    gpt2 = {series[f"gpt2, N = {n // 1000}K"].get_color() for n in NS}
    assert gpt2 == {"C0"} and series["llama, N = 10K"].get_color() == "C1"
    assert ax.get_xscale() == "log" and "1000 exposures" in fig.texts[0].get_text()


def test_quantized_figure_has_a_fixed_colour_per_setting():
    ax = plot.figure(capacity_rows(), "quantized").axes[0]
    series = lines(ax)
    colour = {label.split(",")[0]: line.get_color() for label, line in series.items()}
    assert colour == {"unquantized": "C0", "int8": "C1", "int4": "C2"}
    int4 = series["int4, N = 10K"]
    Ps = sorted(GPT2.values())
    assert list(int4.get_xdata()) == Ps
    assert list(int4.get_ydata()) == pytest.approx(
        [0.6 * min(2.0 * P, bits_max(10_000)) / P for P in Ps]
    )


@pytest.mark.parametrize("kind", plot.KINDS)
def test_each_kind_writes_a_png(tmp_path, kind):
    sweep = write_sweep(tmp_path / "sweep", all_rows())
    out = plot.plot(sweep, tmp_path / "figs" / f"{kind}.png", kind=kind)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    image = matplotlib.image.imread(out)
    width, height = plot.SPECS[kind].size  # a capacity figure grows to fit its legends
    assert image.shape[1:] == (round(width * 150), 4) and image.shape[0] >= round(height * 150)
    assert image.shape[1] > image.shape[0]
    assert [p.name for p in out.parent.iterdir()] == [f"{kind}.png"]


def test_capacity_is_the_default_and_dpi_scales_the_image(tmp_path):
    sweep = write_sweep(tmp_path / "sweep", capacity_rows())
    small = matplotlib.image.imread(plot.plot(sweep, tmp_path / "a.png", dpi=50)).shape
    large = matplotlib.image.imread(plot.plot(sweep, tmp_path / "b.png", dpi=100)).shape
    assert small[1] == 600 and large[:2] == (2 * small[0], 2 * small[1])


def test_reading_nulls_from_parquet(tmp_path):
    """Rows with a null in a column the figure needs are left out, not drawn as zeros."""
    rows = capacity_rows()
    rows[0]["R_clamped"] = None
    rows[1]["bits_clamped"] = float("nan")
    sweep = write_sweep(tmp_path / "sweep", rows)
    left = plot.figure(plot.load_rows(sweep), "capacity").axes[0]
    line = lines(left)["N = 10K"]
    Ps = sorted(GPT2.values())
    # the first model is gone; for the second only the worse seed is left
    assert list(line.get_xdata()) == Ps[1:]
    assert line.get_ydata()[0] == 0.5 * min(2 * Ps[1], bits_max(10_000))


@pytest.mark.parametrize(
    ("value", "text"),
    [(500, "500"), (1500, "1.5K"), (10_000, "10K"), (999_999, "1M"), (2.5e9, "2.5B")],
)
def test_si(value, text):
    assert plot.si(value) == text


def failing(tmp_path, rows, **kwargs):
    """Run plot() where it must fail; check the old PNG is untouched and nothing was added."""
    out = tmp_path / "figs" / "fig.png"
    out.parent.mkdir()
    out.write_bytes(b"old")
    sweep = tmp_path / "sweep"
    if rows is not None:
        write_sweep(sweep, rows)
    with pytest.raises(InputError) as info:
        plot.plot(sweep, out, **kwargs)
    assert out.read_bytes() == b"old" and [p.name for p in out.parent.iterdir()] == ["fig.png"]
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_kind(tmp_path):
    assert "unknown plot kind 'bits'" in failing(tmp_path, capacity_rows(), kind="bits")


def test_missing_table(tmp_path):
    assert "runs.parquet: no such file" in failing(tmp_path, None)


def test_unreadable_table(tmp_path):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "runs.parquet").write_bytes(b"not parquet\n" * 10)
    assert "not a readable parquet table" in failing(tmp_path, None)


def test_only_failed_rows(tmp_path):
    rows = [row(n, m, P, status="failed") for n in NS for m, P in GPT2.items()]
    message = failing(tmp_path, rows)
    assert "no usable rows for the capacity figure (12 rows, 0 done)" in message


def test_only_quantized_rows_make_no_capacity_figure(tmp_path):
    rows = [row(10_000, m, P, quantize="int8") for m, P in GPT2.items()]
    assert "quantize none" in failing(tmp_path, rows)
    rows += [row(10_000, m, P) for m, P in GPT2.items()]
    assert plot.figure(rows, "quantized") is not None


def test_missing_column(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "R_clamped"} for r in capacity_rows()]
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), sweep / "runs.parquet")
    with pytest.raises(InputError, match="no column R_clamped"):
        plot.plot(sweep, tmp_path / "fig.png")
    assert not (tmp_path / "fig.png").exists()


def test_bad_output_and_dpi(tmp_path):
    sweep = write_sweep(tmp_path / "sweep", capacity_rows())
    with pytest.raises(InputError, match="is a folder"):
        plot.plot(sweep, tmp_path)
    with pytest.raises(InputError, match="dpi"):
        plot.plot(sweep, tmp_path / "fig.png", dpi=0)
    assert not (tmp_path / "fig.png").exists()


# -- formats and options --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "magic"),
    [("fig.png", b"\x89PNG\r\n\x1a\n"), ("fig.pdf", b"%PDF-"), ("fig.SVG", b"<?xml")],
)
def test_the_extension_names_the_format(tmp_path, name, magic):
    sweep = write_sweep(tmp_path / "sweep", capacity_rows())
    data = plot.plot(sweep, tmp_path / name).read_bytes()
    assert data.startswith(magic)
    if name.endswith("SVG"):
        assert b"<svg" in data[:1000] and b"bits per parameter R" in data


@pytest.mark.parametrize("name", ["fig.jpg", "fig", "fig.png.bak"])
def test_unknown_extensions_are_refused(tmp_path, name):
    sweep = write_sweep(tmp_path / "sweep", capacity_rows())
    with pytest.raises(InputError, match=r"name the figure file \.png, \.pdf, \.svg"):
        plot.plot(sweep, tmp_path / name)
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize("dpi", [49, 1201, 0, -5, float("nan")])
def test_dpi_out_of_range_is_refused(tmp_path, dpi):
    message = failing(tmp_path, capacity_rows(), dpi=dpi)
    assert "between 50 and 1200" in message


def test_cli_refuses_bad_extension_and_dpi_in_one_line(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "sweep", capacity_rows())
    for extra in (
        ["--out", str(tmp_path / "f.jpg")],
        ["--out", str(tmp_path / "f.png"), "--dpi", "5000"],
    ):
        assert cli.main(["plot", str(sweep), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("bioknow: error:")
    assert not list(tmp_path.glob("f.*"))


# -- scale, marks and intervals -------------------------------------------------------------


def weak_rows():
    """Small models storing little: R from about 0.001 to 0.03, one run with a negative
    value term (clamped) and one storing nothing at all (every term negative)."""
    rows = []
    for n in NS[:2]:
        for i, (model, P) in enumerate(GPT2.items()):
            bits = 0.01 * (i + 1) * P / 3
            rows.append({**row(n, model, P), "bits": bits, "bits_clamped": bits,
                         "R": bits / P, "R_clamped": bits / P})  # fmt: skip
    first = rows[0]  # a negative term: raw bits below the clamped ones
    first.update(bits=first["bits_clamped"] - 500.0, R=(first["bits_clamped"] - 500.0) / 1e5)
    last = rows[-1]  # nothing stored
    last.update(bits=-2000.0, R=-2000.0 / last["P"], bits_clamped=0.0, R_clamped=0.0)
    return rows


def inside(ax, values):
    low, high = ax.get_ylim()
    return all(low <= v <= high for v in values)


def test_small_ratios_fill_the_r_panel():
    rows = weak_rows()
    right = plot.figure(rows, "capacity").axes[1]
    values = [r["R_clamped"] for r in rows]
    low, high = right.get_ylim()
    assert inside(right, values) and high < 1.5 * max(values)  # not flattened onto the axis
    assert "R=1" not in by_gid(right)  # the lines at 1 and 2 are far above: a note says so
    assert any("above this range" in t.get_text() for t in right.get_legend().get_texts())


def test_clamped_and_empty_runs_are_marked_not_dropped():
    rows = weak_rows()
    left, right = plot.figure(rows, "capacity").axes
    hollow = [line for line in left.get_lines() if line.get_gid() == "clamped"]
    xs = sorted(x for line in hollow for x in line.get_xdata())
    assert xs == sorted([rows[0]["P"], rows[-1]["P"]])
    for line in hollow:
        assert line.get_markerfacecolor() == "none" and line.get_linestyle() == "None"
    # the run storing nothing sits on the bottom edge of the log axis, the other at its bits
    points = {
        x: y for line in hollow for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)
    }
    assert points[rows[-1]["P"]] == left.get_ylim()[0]
    assert points[rows[0]["P"]] == rows[0]["bits_clamped"]
    legend = [t.get_text() for t in left.get_legend().get_texts()]
    assert any("clamped" in t for t in legend) and any("no bits stored" in t for t in legend)
    # on the linear R axis both are hollow at their clamped value, inside the axis
    hollow = [line for line in right.get_lines() if line.get_gid() == "clamped"]
    ys = sorted(y for line in hollow for y in line.get_ydata())
    assert ys == sorted([0.0, rows[0]["R_clamped"]]) and inside(right, ys)
    assert any("clamped" in t.get_text() for t in right.get_legend().get_texts())


def test_intervals_are_drawn_where_the_table_has_them():
    rows = capacity_rows()
    for r in rows[:4]:
        r.update(R_ci95_low=r["R"] * 0.8, R_ci95_high=r["R"] * 1.1)
    right = plot.figure(rows, "capacity").axes[1]
    caps = [line for line in right.get_lines() if line.get_gid() == "ci95"]
    ends = sorted(y for line in caps for y in line.get_ydata())
    wanted = sorted([r["R"] * 0.8 for r in rows[:4]] + [r["R"] * 1.1 for r in rows[:4]])
    assert ends == pytest.approx(wanted)
    assert any("95% interval" in t.get_text() for t in right.get_legend().get_texts())


@pytest.mark.parametrize(
    ("kind", "word"), [("exposures", "1000 exposures"), ("architecture", "gpt2")]
)
def test_one_value_to_compare_warns_and_writes_nothing(tmp_path, capsys, kind, word):
    sweep = write_sweep(tmp_path / "sweep", capacity_rows())
    out = tmp_path / "fig.png"
    with pytest.raises(plot.NothingToCompare, match=word):
        plot.plot(sweep, out, kind=kind)
    assert cli.main(["plot", str(sweep), "--out", str(out), "--kind", kind]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("bioknow: warning:") and "no figure written" in captured.err
    assert not out.exists()


# -- real sweep tables (tests/data/NAME.parquet, made by tests/data/make_tables.py) ---------

DATA = Path(__file__).parent / "data"
TABLES = ("example", "example-sampled", "short", "one-model", "families", "biod")


def real_rows(name):
    return pq.read_table(DATA / f"{name}.parquet").to_pylist()


def points(ax, gid):
    """(x, y) of every point the axes' lines with this gid hold (None: the series)."""
    return {
        (float(x), float(y))
        for line in ax.get_lines()
        if line.get_gid() == gid
        for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)
    }


def check_every_run_drawn(ax, rows, x, y, log=False):
    """Each run is a point of its series inside the axes (on a log axis, one with y <= 0
    sits hollow on the bottom edge), and hollow where its bits are clamped."""
    low, high = ax.get_ylim()
    series, hollow = points(ax, None), points(ax, "clamped")
    for row in rows:
        at = (float(row[x]), float(row[y]))
        assert at in series, row["point"]
        if log and row[y] <= 0:
            assert (at[0], low) in hollow, row["point"]
        else:
            assert low <= row[y] <= high, row["point"]
            assert (at in hollow) == plot.clamped(row), row["point"]


@pytest.mark.parametrize("name", TABLES)
def test_every_run_of_a_real_sweep_is_drawn(name):
    rows = real_rows(name)
    left, right = plot.figure(rows, "capacity").axes
    check_every_run_drawn(left, rows, "P", "bits_clamped", log=True)
    check_every_run_drawn(right, rows, "P", "R_clamped")
    # the R axis fits the data: R = 1 and 2 are far above every run here
    values = [max(r["R_clamped"], r.get("R_ci95_high") or 0) for r in rows]
    assert right.get_ylim()[1] < 1.3 * max(max(values), 0.05)
    assert right.get_legend() is not None and left.get_legend() is not None


def test_intervals_of_a_sampled_sweep():
    rows = real_rows("example-sampled")
    right = plot.figure(rows, "capacity").axes[1]
    caps = sorted(
        y for line in right.get_lines() if line.get_gid() == "ci95" for y in line.get_ydata()
    )
    ends = sorted(r[f"R_ci95_{end}"] for r in rows for end in ("low", "high"))
    assert len(ends) == 12 and caps == pytest.approx(ends)


def test_a_biod_sweep_with_two_datasets_per_n():
    """bioD at D = 10 and 20 for each N: four datasets, told apart by their maximum bits."""
    rows = real_rows("biod")
    assert {"bits_diversity", "p3"} <= set(rows[0])
    left = plot.figure(rows, "capacity").axes[0]
    maxima = sorted(
        line.get_ydata()[0] for line in left.get_lines() if "bits_max" in str(line.get_gid())
    )
    assert maxima == sorted({r["bits_max"] for r in rows}) and len(maxima) == 4
    labels = [t.get_text() for t in left.get_legend().get_texts()]
    assert sum("bits" in label and label.startswith("N = ") for label in labels) == 4


def test_families_and_exposures_of_a_real_sweep():
    rows = real_rows("families")
    for kind in ("exposures", "architecture"):
        ax = plot.figure(rows, kind).axes[0]
        check_every_run_drawn(ax, rows, plot.SPECS[kind].x, "R_clamped")
    with pytest.raises(plot.NothingToCompare, match="quantizations"):
        plot.figure(rows, "quantized")


def test_a_table_without_the_bits_columns_still_draws_r():
    rows = [{k: v for k, v in r.items() if not k.startswith("bits")} for r in all_rows()]
    assert plot.figure(rows, "exposures").axes[0].get_legend() is not None


def test_exposures_figure_labels_each_model_with_the_p_of_its_runs():
    """P counts the embedding rows of the token ids the corpus uses, so one model has a P
    per N: each series is labelled with its own runs' P, not the smallest of any N."""
    rows = [
        row(n, "gpt2-1-1", P, exposures=e)
        for n, P in ((100, 141_000), (200, 172_480))
        for e in (100, 1000)
    ]
    labels = set(lines(plot.figure(rows, "exposures").axes[0]))
    assert labels == {"gpt2-1-1 (P = 141K), N = 100", "gpt2-1-1 (P = 172K), N = 200"}
