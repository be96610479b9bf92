import matplotlib.image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bioknow import plot
from bioknow.errors import InputError

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
    assert right.get_ylim()[0] == 0
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
    width, height = plot.SPECS[kind].size
    assert image.shape == (round(height * 150), round(width * 150), 4)
    assert image.shape[1] > image.shape[0]
    assert [p.name for p in out.parent.iterdir()] == [f"{kind}.png"]


def test_capacity_is_the_default_and_dpi_scales_the_image(tmp_path):
    sweep = write_sweep(tmp_path / "sweep", capacity_rows())
    out = plot.plot(sweep, tmp_path / "a.png", dpi=50)
    assert matplotlib.image.imread(out).shape == (240, 600, 4)


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
