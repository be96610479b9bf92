import functools
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bioknow import cli
from bioknow.base.errors import InputError
from bioknow.study import fit

THIN_GRID = ((0, 10, 20), (0, 0.5, 1), (0, 10, 20), (0, 0.5, 1), (-1, 0, 1))  # 243 starts


def inside(result, name, truth):
    low, high = result["intervals"][name]
    return low <= truth <= high


def table(**columns):
    """A results table of done, unquantized runs with the given numeric columns."""
    n = len(next(iter(columns.values())))
    return {"status": ["done"] * n, "quantize": ["none"] * n, **columns}


def chinchilla_loss(p, d):
    return 1.82 + 482 / p**0.348 + 2085 / d**0.366


def capacity_rows(rng, ns=(1_000, 10_000, 100_000)):
    """bits = min(2 P e^noise(1%), bits_max) over P from a fifth to five times the boundary."""
    rows = []
    for n in ns:
        bits_max = 60.0 * n
        for i, p in enumerate(bits_max / 2 * np.geomspace(0.2, 5, 9)):
            bits = min(2.0 * p * np.exp(rng.normal(0, 0.01)), bits_max)
            rows.append(
                {"point": f"n{n}-m{i}", "status": "done", "quantize": "none", "n": n,
                 "model": f"m{i}", "P": p, "bits": bits, "bits_max": bits_max,
                 "R": bits / p, "R_max": bits_max / p}
            )  # fmt: skip
    return rows


def columns_of(rows):
    return {k: [row.get(k) for row in rows] for k in rows[0]}


def test_capacity_law_recovers_r_star_and_peaks():
    rows = capacity_rows(np.random.default_rng(0))
    # neither a failed run nor a quantized one counts, however high its R
    rows.append({**rows[0], "point": "failed", "status": "failed", "bits": 1e9, "R": 99.0})
    rows.append({**rows[0], "point": "int4", "quantize": "int4", "R": 50.0})
    result = fit.capacity_law(columns_of(rows), draws=300)
    assert result["converged"] and result["n_runs"] == 27
    assert result["params"]["R_star"] == pytest.approx(2.0, rel=0.01)
    assert inside(result, "R_star", 2.0)
    low, high = result["intervals"]["R_star"]
    assert high - low < 0.05
    assert [p["n"] for p in result["peaks"]] == [1_000, 10_000, 100_000]
    for peak in result["peaks"]:
        same_n = [r for r in rows[:27] if r["n"] == peak["n"]]
        best = max(same_n, key=lambda r: r["R"])
        assert peak["point"] == best["point"] and peak["R"] == best["R"]
        assert peak["R"] == pytest.approx(2.0, rel=0.03)


def test_capacity_law_every_run_at_bits_max_is_not_a_fit():
    rows = [r for r in capacity_rows(np.random.default_rng(0)) if r["bits"] == r["bits_max"]]
    result = fit.capacity_law(columns_of(rows))
    assert not result["converged"] and "params" not in result
    assert "lower bound" in result["message"]


def test_power_law_recovers_a_and_b():
    rng = np.random.default_rng(1)
    x = np.geomspace(1, 1e4, 40)
    y = 3 * x**0.7 * np.exp(rng.normal(0, 0.02, x.size))
    result = fit.power_law(x, y)
    assert result["converged"] and result["r2"] > 0.99
    assert inside(result, "a", 3.0) and inside(result, "b", 0.7)
    assert result["params"]["b"] == pytest.approx(0.7, abs=0.01)
    assert fit.power_law(x, y) == result  # seeded: the same numbers again


def test_power_law_with_offset_recovers_c():
    rng = np.random.default_rng(2)
    x = np.geomspace(0.1, 1e3, 40)
    y = (5 + 3 * x**0.7) * np.exp(rng.normal(0, 0.01, x.size))
    result = fit.power_law(x, y, offset=True, draws=200)
    assert result["converged"] and result["agree"] >= 2
    for name, truth in (("a", 3.0), ("b", 0.7), ("c", 5.0)):
        assert inside(result, name, truth), name
    assert result["params"]["c"] == pytest.approx(5.0, rel=0.05)
    # without the offset, the plain law is visibly wrong here
    assert not inside(fit.power_law(x, y), "b", 0.7)
    # and where there is no offset, c runs to its boundary 0: not presented as a fit
    result = fit.power_law(x, 3 * x**0.7, offset=True, draws=5)
    assert not result["converged"] and "c tends to 0" in result["message"]
    assert "params" not in result and "intervals" not in result


def test_kaplan_recovers_exponents():
    rng = np.random.default_rng(3)
    p = np.geomspace(1e5, 1e9, 30)
    loss = (8.8e13 / p) ** 0.076 * np.exp(rng.normal(0, 0.005, p.size))
    result = fit.kaplan(table(P=p, final_loss=loss), with_steps=False, draws=100)
    assert result["converged"] and inside(result, "aN", 0.076) and inside(result, "Nc", 8.8e13)

    p, steps = (
        a.ravel() for a in np.meshgrid(np.geomspace(1e5, 1e9, 6), np.geomspace(1e2, 1e5, 6))
    )
    loss = ((8.8e13 / p) ** 0.076 + (2.1e3 / steps) ** 0.76) * np.exp(rng.normal(0, 0.005, p.size))
    result = fit.kaplan(table(P=p, steps=steps, final_loss=loss), with_steps=True, draws=100)
    assert result["converged"]
    assert (
        inside(result, "aN", 0.076) and inside(result, "aS", 0.76) and inside(result, "Sc", 2.1e3)
    )


def test_chinchilla_recovers_alpha_beta_e():
    rng = np.random.default_rng(4)
    p, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e10, 8), np.geomspace(1e8, 1e12, 8)))
    loss = chinchilla_loss(p, d) * np.exp(rng.normal(0, 0.005, p.size))
    result = fit.chinchilla(table(P=p, tokens=d, final_loss=loss), grid=THIN_GRID, draws=40)
    assert result["converged"] and result["agree"] >= 2 and result["starts"] == 243
    for name, truth in (("alpha", 0.348), ("beta", 0.366), ("E", 1.82)):
        assert inside(result, name, truth), name
    assert result["bootstrap"]["converged"] >= 36


def test_too_few_points_is_not_converged_with_a_reason():
    p, d = np.geomspace(1e7, 1e10, 5), np.geomspace(1e8, 1e12, 5)
    result = fit.chinchilla(table(P=p, tokens=d, final_loss=chinchilla_loss(p, d)))
    assert not result["converged"] and result["skipped"] and "params" not in result
    assert result["message"] == (
        "not enough data for this fit: 5 of 5 runs have finite, positive P, tokens, "
        "final_loss; 5 parameters need at least 6 runs"
    )
    two = table(P=[1e6, 1e7], final_loss=[3.0, 2.8])
    assert "2 parameters need at least 3 runs" in fit.kaplan(two, with_steps=False)["message"]
    result = fit.power_law([1, 2, 3], [1, 2, 3], offset=True)
    assert not result["converged"] and result["message"].startswith(fit.NOT_ENOUGH)


def test_degenerate_inputs_are_not_enough_data_with_the_reason():
    # one value of N: Chinchilla cannot separate A/N^alpha from E
    p, d = np.full(9, 1e6), np.geomspace(1e8, 1e12, 9)
    result = fit.chinchilla(table(P=p, tokens=d, final_loss=chinchilla_loss(p, d)))
    assert result["message"] == (
        "not enough data for this fit: P takes 1 distinct value(s) on these runs; the form needs 3"
    )
    # negative, zero, NaN and infinite values are left out, and said so
    x = [1.0, 2.0, 3.0, 4.0, np.inf, 6.0]
    y = [1.0, -2.0, 0.0, np.nan, 5.0, 7.0]
    result = fit.power_law(x, y, names=("P", "bits"))
    assert result["message"] == (
        "not enough data for this fit: 2 of 6 runs have finite, positive P, bits "
        "(P not finite in 1, bits not finite in 1, bits <= 0 in 2); "
        "2 parameters need at least 3 runs"
    )
    # a single run, or none
    assert fit.capacity_law(columns_of(capacity_rows(np.random.default_rng(0))[:1]))["skipped"]
    assert fit.kaplan(table(P=[], final_loss=[]), with_steps=False)["skipped"]


def test_an_overflow_in_the_bootstrap_is_a_draw_that_did_not_converge():
    """A 3 x 3 grid of losses that do not depend on N or D: some bootstrap draws run A or B
    to e^1000 and beyond (an OverflowError once); they count as draws that did not converge."""
    p, d = (a.ravel() for a in np.meshgrid([1e5, 2e5, 4e5], [1e6, 3e6, 1e7]))
    loss = 2.0 + np.random.default_rng(3).normal(0, 0.05, p.size)
    grid = ((0, 10), (0.5, 1), (0, 10), (0.5, 1), (0, 1))
    result = fit.chinchilla(table(P=p, tokens=d, final_loss=loss), grid=grid, draws=20)
    assert not result["converged"] and "params" not in result
    assert "bootstrap refits converged" in result["message"]
    json.dumps(result, allow_nan=False)


def test_optimizer_stopped_early_is_not_converged():
    p, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e10, 4), np.geomspace(1e8, 1e12, 4)))
    df = table(P=p, tokens=d, final_loss=chinchilla_loss(p, d))
    result = fit.chinchilla(df, grid=THIN_GRID, maxiter=1)
    assert not result["converged"] and "ITERATIONS" in result["message"]
    assert "params" not in result and "intervals" not in result and "alpha" in result["last"]
    p = np.geomspace(1e5, 1e9, 10)
    loss = (8.8e13 / p) ** 0.076 * np.exp(np.random.default_rng(6).normal(0, 0.005, p.size))
    result = fit.kaplan(table(P=p, final_loss=loss), False, maxiter=1)
    assert not result["converged"] and "params" not in result


def sweep_table(rng):
    """A runs.parquet: capacity rows over two N, with losses from the Chinchilla law, a
    failed run and a quantized one."""
    rows = capacity_rows(rng, ns=(1_000, 10_000))
    for i, row in enumerate(rows):
        tokens = 1e8 * 10 ** (i % 5)
        row.update(
            variant="bioS", exposures=100, family="gpt2", n_layer=4, n_head=4, seed=0,
            P_total=row["P"] * 1.2, P_nonembedding=None, p1=1.0, p2=2.0, steps=tokens / 512,
            tokens=tokens, wall_s=1.0, tokens_per_s=1e5, bits_clamped=row["bits"],
            R_clamped=row["R"],
            final_loss=chinchilla_loss(row["P"], tokens) * np.exp(rng.normal(0, 0.005)),
        )  # fmt: skip
    rows.append({**rows[0], "point": "failed", "status": "failed", "bits": None, "R": None})
    rows.append({**rows[0], "point": "q", "quantize": "int8"})
    return pa.Table.from_pylist(rows)


def test_fit_all_writes_json_and_report(tmp_path, monkeypatch):
    pq.write_table(sweep_table(np.random.default_rng(5)), tmp_path / "runs.parquet")
    monkeypatch.setattr(
        fit, "chinchilla", functools.partial(fit.chinchilla, grid=THIN_GRID, draws=40)
    )
    monkeypatch.setattr(fit, "power_law", functools.partial(fit.power_law, draws=50))
    monkeypatch.setattr(fit, "kaplan", functools.partial(fit.kaplan, maxiter=1))
    result = fit.fit_all(tmp_path)
    assert json.loads((tmp_path / "fit.json").read_text()) == result
    assert result["rows"] == 20 and result["runs_used"] == 18
    assert result["capacity"]["converged"] and inside(result["capacity"], "R_star", 2.0)
    assert [row["n"] for row in result["power_law"]["per_n"]] == [1_000, 10_000]
    assert result["chinchilla"]["P"]["converged"]
    assert result["chinchilla"]["P_nonembedding"]["skipped"]

    report = (tmp_path / "report.md").read_text()
    assert "18 runs used (status done, quantize none) of 20 rows" in report
    for form in (result["capacity"], result["chinchilla"]["P"]):
        for name, (low, high) in form["intervals"].items():
            assert f"{name} = {form['params'][name]:.4g} [{low:.4g}, {high:.4g}]" in report
    plain = result["power_law"]["per_n"][0]["plain"]
    assert f"b = {plain['params']['b']:.4g} [" in report
    assert "did not converge: STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT" in report
    assert (
        "- N = P_nonembedding: L(N, D) = E + A/N^alpha + B/D^beta: not enough data for this "
        "fit: 0 of 18 runs have finite, positive P_nonembedding, tokens, final_loss "
        "(P_nonembedding not finite in 18)"
    ) in report
    assert "Nc =" not in report  # a fit that did not converge shows no parameters


def test_fit_all_input_errors(tmp_path):
    with pytest.raises(InputError, match="runs.parquet"):
        fit.fit_all(tmp_path)
    pq.write_table(sweep_table(np.random.default_rng(5)), tmp_path / "runs.parquet")
    with pytest.raises(InputError, match="unknown column 'loss'"):
        fit.fit_all(tmp_path, metric="loss")
    with pytest.raises(InputError, match="not numeric"):
        fit.fit_all(tmp_path, against="model")
    assert not (tmp_path / "fit.json").exists()


def test_bootstrap_is_seeded():
    rows = columns_of(capacity_rows(np.random.default_rng(0)))
    first, again = fit.capacity_law(rows, seed=7), fit.capacity_law(rows, seed=7)
    assert first == again and first["bootstrap"]["seed"] == 7
    assert fit.capacity_law(rows, seed=8)["intervals"] != first["intervals"]


def test_a_fit_the_runs_do_not_determine_is_not_a_result():
    """Six runs for Chinchilla's five parameters: the optimizer may stop, but the
    bootstrap refits do not agree, so no parameters are presented."""
    rng = np.random.default_rng(3)
    n_params = np.array([1e5, 2e5, 4e5, 1e5, 2e5, 4e5])
    tokens = np.array([1e6, 1e6, 1e6, 2e6, 2e6, 2e6])
    loss = 2.0 + rng.normal(0, 0.3, 6) ** 2
    df = {
        "P": n_params,
        "tokens": tokens,
        "final_loss": loss,
        "status": ["done"] * 6,
        "quantize": ["none"] * 6,
    }
    grid = ((0, 10), (0.5, 1), (0, 10), (0.5, 1), (0, 1))
    result = fit.chinchilla(df, draws=20, grid=grid)
    assert not result["converged"] and "params" not in result


# -- real sweep tables (tests/data/NAME.parquet, made by tests/data/make_tables.py) ---------

DATA = Path(__file__).parent / "data"


def real_sweep(tmp_path, name, change=None):
    """A sweep folder holding the table of a real sweep, its rows passed through change."""
    rows = pq.read_table(DATA / f"{name}.parquet").to_pylist()
    folder = tmp_path / name
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(change(rows) if change else rows), folder / "runs.parquet")
    return folder


def no_constant(name):
    raise AssertionError(f"fit.json holds {name}, which is not JSON")


def fit_cli(folder, *options):
    """`bioknow fit FOLDER`: exit status 0, and fit.json (strict JSON) and report.md
    written, nothing else left behind. Returns both."""
    assert cli.main(["fit", str(folder), *options]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["fit.json", "report.md", "runs.parquet"]
    result = json.loads((folder / "fit.json").read_text(), parse_constant=no_constant)
    return result, (folder / "report.md").read_text()


def every_fit(result):
    yield result["capacity"]
    for row in result["power_law"]["per_n"]:
        yield row["plain"]
        yield row["offset"]
    yield from result["kaplan"].values()
    yield from result["chinchilla"].values()


def check_sensible(result, report):
    """A converged fit has finite parameters, each with an interval; any other says why in
    fit.json and in report.md, and gives no numbers."""
    for form in every_fit(result):
        if form["converged"]:
            for name, value in form["params"].items():
                low, high = form["intervals"][name]
                assert np.isfinite([value, low, high]).all() and low <= high, (form, name)
        else:
            assert "params" not in form and "intervals" not in form
            assert form["message"] and form["message"] in report


@pytest.fixture
def quick(monkeypatch):
    """Fewer bootstrap draws: the same fits, in a fraction of the time."""
    for name, draws in (("capacity_law", 100), ("power_law", 100), ("kaplan", 40)):
        monkeypatch.setattr(fit, name, functools.partial(getattr(fit, name), draws=draws))


def test_fit_on_the_readme_example(tmp_path):
    """The example grid's own table (it once ended in an OverflowError and wrote nothing)."""
    folder = real_sweep(tmp_path, "example")
    result, report = fit_cli(folder)
    check_sensible(result, report)
    rows = pq.read_table(folder / "runs.parquet").to_pylist()
    capacity = result["capacity"]
    ratios = [r["bits"] / r["P"] for r in rows]
    assert capacity["converged"] and min(ratios) < capacity["params"]["R_star"] < max(ratios)
    for peak in capacity["peaks"]:
        best = max((r for r in rows if r["n"] == peak["n"]), key=lambda r: r["R"])
        assert (peak["point"], peak["R"]) == (best["point"], best["R"])
    assert [row["n"] for row in result["power_law"]["per_n"]] == [100, 200]
    for row in result["power_law"]["per_n"]:
        assert row["plain"]["converged"]
        assert row["offset"]["message"].endswith("3 parameters need at least 4 runs")
    # steps and tokens follow N here (2 values): the two-variable forms are not determined
    assert result["kaplan"]["N_S"]["message"] == (
        "not enough data for this fit: steps takes 2 distinct value(s) on these runs; "
        "the form needs 3"
    )
    for column in ("P", "P_nonembedding"):
        assert "tokens takes 2 distinct value(s)" in result["chinchilla"][column]["message"]


def test_fit_of_r_is_the_fit_of_bits_over_p(tmp_path, quick):
    """Any --metric: R = bits / P, so R's power law in P has the exponent of bits' less one."""
    folder = real_sweep(tmp_path, "example-sampled")
    bits, _ = fit_cli(folder)
    ratio, report = fit_cli(folder, "--metric", "R", "--against", "P")
    check_sensible(ratio, report)
    assert "## Power laws per N: R against P" in report
    for of_bits, of_r in zip(bits["power_law"]["per_n"], ratio["power_law"]["per_n"], strict=True):
        assert of_r["plain"]["params"]["b"] == pytest.approx(of_bits["plain"]["params"]["b"] - 1)
        assert of_r["plain"]["params"]["a"] == pytest.approx(of_bits["plain"]["params"]["a"])
    assert ratio["capacity"] == bits["capacity"] and ratio["kaplan"] == bits["kaplan"]


def test_fit_on_negative_r(tmp_path, quick):
    """The shortened sweep: two models that learned nothing (R < 0)."""
    result, report = fit_cli(real_sweep(tmp_path, "short"))
    check_sensible(result, report)
    assert not any(form["converged"] for form in every_fit(result))
    capacity = result["capacity"]
    assert capacity["message"] == (
        "not enough data for this fit: 0 of 2 runs have finite, positive P, bits_max, bits "
        "(bits <= 0 in 2); 1 parameter needs at least 2 runs"
    )
    [peak] = capacity["peaks"]  # the peak R is still reported, negative as it is
    assert peak["n"] == 30 and peak["R"] < 0 and peak["model"] == "gpt2-1-2"


def test_fit_on_one_model(tmp_path, quick):
    result, report = fit_cli(real_sweep(tmp_path, "one-model"))
    check_sensible(result, report)
    for row in result["power_law"]["per_n"]:  # one run per N
        assert "0 of 1 runs have finite, positive P, bits" in row["plain"]["message"]


def test_fit_on_one_n_and_on_one_run(tmp_path, quick):
    one_n = real_sweep(tmp_path, "example", lambda rows: [r for r in rows if r["n"] == 100])
    result, report = fit_cli(one_n)
    check_sensible(result, report)
    assert [row["n"] for row in result["power_law"]["per_n"]] == [100]
    assert result["capacity"]["converged"] and result["capacity"]["n_runs"] == 3
    assert "P takes 1" not in report
    one_run = real_sweep(tmp_path / "1", "example", lambda rows: rows[:1])
    result, report = fit_cli(one_run)
    check_sensible(result, report)
    assert all(form["skipped"] for form in every_fit(result))


def test_fit_leaves_out_bad_rows_and_says_so(tmp_path, quick):
    def spoil(rows):
        rows[0]["bits"] = float("nan")
        rows[1]["P"] = float("inf")
        rows[2]["bits"] = 0.0
        failed = {k: None for k in rows[0]} | {"point": "x", "status": "failed", "quantize": "none"}
        return rows + [failed, {**rows[3], "quantize": "int8", "bits": -1.0}]

    result, report = fit_cli(real_sweep(tmp_path, "example", spoil))
    check_sensible(result, report)
    assert result["rows"] == 8 and result["runs_used"] == 6
    capacity = result["capacity"]
    assert capacity["converged"] and capacity["n_runs"] == 3
    [n100, _] = result["power_law"]["per_n"]  # every spoiled row has N = 100
    assert n100["plain"]["message"] == (
        "not enough data for this fit: 0 of 3 runs have finite, positive P, bits "
        "(P not finite in 1, bits not finite in 1, bits <= 0 in 1); "
        "2 parameters need at least 3 runs"
    )


def test_fit_when_every_run_failed(tmp_path):
    """A table of failed runs has no result columns: every fit says so, nothing crashes."""
    keep = ("point", "status", "error", "variant", "n", "exposures", "model", "seed", "quantize")

    def failed(rows):
        return [
            {k: r[k] for k in keep} | {"status": "failed", "error": "train exited"} for r in rows
        ]

    result, report = fit_cli(real_sweep(tmp_path, "example", failed))
    check_sensible(result, report)
    assert result["runs_used"] == 0 and result["capacity"]["peaks"] == []
    assert "the table has no column P" in result["kaplan"]["N"]["message"]


@pytest.mark.parametrize("name", ["families", "biod"])
def test_fit_on_other_real_tables(tmp_path, quick, name):
    """Two families at two exposures with sampled evaluations; bioD at two N and two D."""
    result, report = fit_cli(real_sweep(tmp_path, name), "--metric", "R_clamped")
    check_sensible(result, report)
    assert result["runs_used"] == pq.read_metadata(DATA / f"{name}.parquet").num_rows


def test_a_fit_that_raises_is_reported_and_the_others_written(tmp_path, quick, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(fit, "capacity_law", broken)
    result, report = fit_cli(real_sweep(tmp_path, "example"))
    failed = "the fit failed: ZeroDivisionError: float division by zero"
    assert result["capacity"]["message"] == failed and not result["capacity"]["converged"]
    assert f"did not converge: {failed}." in report
    assert all(row["plain"]["converged"] for row in result["power_law"]["per_n"])


def test_a_fit_with_an_absurd_interval_is_unidentified(tmp_path, quick):
    """The example grid's N = 100 power law: three runs, a's interval over 20 orders of
    magnitude. The optimizer converged, but the runs do not pin a down: fit.json and
    report.md call it unidentified and say why; R*'s narrow interval stays converged."""
    result, report = fit_cli(real_sweep(tmp_path, "example"))
    plain = next(row["plain"] for row in result["power_law"]["per_n"] if row["n"] == 100)
    low, high = plain["intervals"]["a"]
    assert high / low > 1e6 and plain["identified"] is False
    assert plain["unidentified"].startswith("a's 95% interval [")
    assert "orders of magnitude: these runs do not pin it down" in plain["unidentified"]
    line = next(line for line in report.splitlines() if line.startswith("- N = 100: y = a x^b"))
    assert "; unidentified (a's 95% interval" in line and "; converged;" not in line
    assert result["capacity"]["identified"] is True
    assert "; converged;" in next(line for line in report.splitlines() if "R_star" in line)
