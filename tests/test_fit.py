import functools
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bioknow import fit
from bioknow.errors import InputError

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
    assert not result["converged"] and "params" not in result
    assert result["message"] == "too few runs: 5 for 5 parameters (need 6)"
    two = table(P=[1e6, 1e7], final_loss=[3.0, 2.8])
    assert "too few runs" in fit.kaplan(two, with_steps=False)["message"]
    assert not fit.power_law([1, 2, 3], [1, 2, 3], offset=True)["converged"]


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
    assert "skipped: no data in column P_nonembedding" in report
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
