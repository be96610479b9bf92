"""Scaling-law fits over a sweep's results table (SPEC section 7).

Forms:
- capacity law, bits = min(R* P, bits_max) (Part 3.3: a peak capacity ratio R*);
- power law y = a x^b, and with an offset y = c + a x^b;
- Kaplan et al. (2001.08361): L(N) = (Nc/N)^aN and L(N, S) = (Nc/N)^aN + (Sc/S)^aS;
- Chinchilla (Hoffmann et al. 2022, refitted as Besiroglu et al. 2404.10102 do):
  L(N, D) = E + A/N^alpha + B/D^beta.

The nonlinear forms are fitted in log space: the log of the prediction, written as a
log-sum-exp of its terms, minus the log of the observation, minimized by L-BFGS-B from
several starts. A fit is `converged` only when scipy reports success and the best loss was
reached by at least two starts or the gradient there is small; otherwise its parameters are
kept apart (`last`) and never reported as a result. Intervals are the 2.5 and 97.5
percentiles of the parameters refitted on rows resampled with replacement, seeded.
"""

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.optimize import minimize, minimize_scalar
from scipy.special import huber
from threadpoolctl import threadpool_limits

from bioknow import atomic
from bioknow.errors import InputError

Table = Mapping[str, Sequence] | pa.Table  # columns, as pyarrow's Table.to_pydict() gives
HUBER_DELTA = 1e-3
# starts for a, alpha, b, beta, e (a = log A, b = log B, e = log E): Epoch AI's grid with
# a, b and e thinned (0..25 by 5 -> 0, 10, 20; -1..1 by 0.5 -> by 1), 675 starts, not 4500
CHINCHILLA_GRID = (
    (0, 10, 20),
    (0, 0.5, 1, 1.5, 2),
    (0, 10, 20),
    (0, 0.5, 1, 1.5, 2),
    (-1, 0, 1),
)
LBFGS = {"ftol": 1e-14, "gtol": 1e-12}
AGREE_RTOL, AGREE_ATOL = 1e-5, 1e-12  # starts that reach the best loss within this agree
SMALL_GRADIENT = 1e-7  # or a largest partial derivative this small, relative to max(1, loss)
BOOT_STARTS = 4  # a bootstrap draw starts from the best fit and the best starts but one
KAPLAN_N = "L(N) = (Nc/N)^aN"
KAPLAN_NS = "L(N, S) = (Nc/N)^aN + (Sc/S)^aS"
CHINCHILLA = "L(N, D) = E + A/N^alpha + B/D^beta"
REQUIRED = ("point", "status", "quantize", "n", "model", "P", "bits", "bits_max", "R", "R_max")


# -- the results table ----------------------------------------------------------------------


def _columns(df: Table) -> Mapping[str, Sequence]:
    return df.to_pydict() if isinstance(df, pa.Table) else df


def _require(df: Mapping[str, Sequence], names: Sequence[str]) -> None:
    missing = [name for name in names if name not in df]
    if missing:
        raise InputError(f"unknown column(s): {', '.join(missing)}")


def _numeric(df: Mapping[str, Sequence], name: str) -> np.ndarray:
    if name not in df:
        raise InputError(f"unknown column {name!r}")
    try:
        return np.array([np.nan if v is None else v for v in df[name]], dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"column {name!r} is not numeric") from None


def _used(df: Mapping[str, Sequence], quantize: str) -> np.ndarray:
    """Indices of the rows with status "done" and this quantization."""
    _require(df, ("status", "quantize"))
    status, quant = np.array(df["status"], dtype=object), np.array(df["quantize"], dtype=object)
    return np.flatnonzero((status == "done") & (quant == quantize))


def _positive_logs(df, rows: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, list]:
    """The rows among `rows` where every named column is finite and positive, and the logs
    of those columns on them."""
    values = [_numeric(df, name)[rows] for name in names]
    ok = np.logical_and.reduce([np.isfinite(v) & (v > 0) for v in values])
    return rows[ok], [np.log(v[ok]) for v in values]


# -- results --------------------------------------------------------------------------------


def _not_fitted(form: str, n_runs: int, message: str, **extra) -> dict:
    return {"form": form, "n_runs": n_runs, "converged": False, "message": message, **extra}


def _too_few(form: str, n_runs: int, n_params: int) -> dict | None:
    if n_runs >= n_params + 1:
        return None
    message = f"too few runs: {n_runs} for {n_params} parameters (need {n_params + 1})"
    return _not_fitted(form, n_runs, message)


def _bootstrap(refit: Callable, n: int, draws: int, seed: int) -> dict:
    """Refit on `draws` resamples of the n rows; the percentiles 2.5 and 97.5 of each
    parameter over the draws whose fit converged (refit gives None for the others)."""
    rng = np.random.default_rng(seed)
    samples = [refit(rng.integers(0, n, n)) for _ in range(draws)]
    samples = [s for s in samples if s is not None]
    info = {"draws": draws, "converged": len(samples), "seed": seed}
    if not samples:
        return {"intervals": None, "bootstrap": info}
    intervals = {
        name: [float(v) for v in np.percentile([s[name] for s in samples], [2.5, 97.5])]
        for name in samples[0]
    }
    return {"intervals": intervals, "bootstrap": info}


# -- optimizers -----------------------------------------------------------------------------


def _one_blas_thread():
    """BLAS single-threaded while optimizing: scipy >= 1.15's L-BFGS-B calls LAPACK on
    tiny matrices, and a multithreaded BLAS then spends most of its time waking threads
    (scipy issue #22438; 6 to 12 times slower here)."""
    return threadpool_limits(limits=1, user_api="blas")


def _lse_objective(terms: Callable, log_y: np.ndarray, loss: str) -> Callable:
    """Loss and gradient of the residuals r = logsumexp_k(t_k) - log y. terms(theta) gives
    the terms t [k, n] and back(g), the gradient from g[k, n] = dloss/dt_k. loss is
    "squares" (sum r^2) or "huber" (sum of Huber(delta=1e-3) of r, the Chinchilla fit)."""

    def fun(theta):
        t, back = terms(theta)
        top = t.max(axis=0)
        e = np.exp(t - top)
        total = e.sum(axis=0)
        r = top + np.log(total) - log_y
        if loss == "huber":
            value, slope = huber(HUBER_DELTA, r).sum(), np.clip(r, -HUBER_DELTA, HUBER_DELTA)
        else:
            value, slope = (r * r).sum(), 2 * r
        return value, back(slope * e / total)

    return fun


def _multistart(fun: Callable, starts: Sequence, maxiter: int) -> dict:
    """L-BFGS-B from every start; the best result and whether it converged: scipy's success
    flag and the best loss reached by at least two starts or a small gradient. Among runs
    tied with the best (within the agreement tolerance) a successful one is preferred."""
    runs = []
    with np.errstate(all="ignore"), _one_blas_thread():
        for x0 in starts:
            res = minimize(
                fun, np.asarray(x0, float), jac=True, method="L-BFGS-B",
                options={**LBFGS, "maxiter": maxiter},
            )  # fmt: skip
            if np.isfinite(res.fun):
                runs.append((res.fun, tuple(x0), res))
    if not runs:
        return {"converged": False, "message": "the loss is not finite from any start"}
    runs.sort(key=lambda run: run[0])
    lowest = runs[0][0]
    tied = [run for run in runs if run[0] <= lowest + AGREE_RTOL * abs(lowest) + AGREE_ATOL]
    best = next((res for _, _, res in tied if res.success), tied[0][2])
    gradient = float(np.max(np.abs(best.jac)))
    small = gradient <= SMALL_GRADIENT * max(1.0, abs(best.fun))
    converged = bool(best.success) and (len(tied) >= 2 or small)
    message = str(best.message)
    if best.success and not converged:
        message = f"best loss reached by 1 of {len(runs)} starts, gradient norm {gradient:.3g}"
    return {
        "x": best.x,
        "loss": float(best.fun),
        "converged": converged,
        "message": message,
        "starts": len(starts),
        "agree": len(tied),
        "gradient_norm": gradient,
        "best_starts": [run[1] for run in runs[: BOOT_STARTS - 1]],
    }


def _nonlinear(
    form: str, make_fun: Callable, report: Callable, n: int, starts: Sequence, **options
) -> dict:
    """Fit a log-sum-exp form from every start, then bootstrap it, each draw from the best
    fit and the best starts. make_fun(idx) gives the objective on rows idx; report(theta)
    names the parameters. options: maxiter, draws, seed."""
    maxiter, draws, seed = options["maxiter"], options["draws"], options["seed"]
    fit = _multistart(make_fun(np.arange(n)), starts, maxiter)
    result = {"form": form, "n_runs": n, "converged": fit["converged"], "message": fit["message"]}
    if "x" not in fit:
        return result
    result.update({k: fit[k] for k in ("loss", "starts", "agree", "gradient_norm")})
    if not fit["converged"]:
        return {**result, "last": report(fit["x"])}
    boot_starts = [fit["x"], *fit["best_starts"]]

    def refit(idx):
        if len(np.unique(idx)) < len(boot_starts[0]) + 1:
            return None
        draw = _multistart(make_fun(idx), boot_starts, maxiter)
        return report(draw["x"]) if draw["converged"] else None

    boot = _bootstrap(refit, n, draws, seed)
    if boot["bootstrap"]["converged"] < draws / 2:  # the runs do not pin the parameters down
        message = (
            f"only {boot['bootstrap']['converged']} of {draws} bootstrap refits "
            "converged: these runs do not determine the parameters"
        )
        return {**result, "converged": False, "message": message, "last": report(fit["x"])}
    return {**result, "params": report(fit["x"]), **boot}


# -- (a) the capacity law -------------------------------------------------------------------


def _capacity_fit(log_p: np.ndarray, log_cap: np.ndarray, log_bits: np.ndarray):
    """The log R* minimizing sum (log min(R* P, bits_max) - log bits)^2: a grid, then
    bounded Brent around the best grid point. None when no run is below its bits_max."""
    if not np.any(log_bits < log_cap):
        return None
    ratio = log_bits - log_p
    grid = np.linspace(ratio.min() - 1, ratio.max() + 1, 201)
    losses = ((np.minimum(grid[:, None] + log_p, log_cap) - log_bits) ** 2).sum(axis=1)
    i = int(np.argmin(losses))
    return minimize_scalar(
        lambda r: ((np.minimum(r + log_p, log_cap) - log_bits) ** 2).sum(),
        bounds=(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]),
        method="bounded",
    )


def capacity_law(df: Table, quantize: str = "none", draws: int = 500, seed: int = 0) -> dict:
    """Per N the peak capacity ratio max R over runs (and the run reaching it); and one R*
    for bits = min(R* P, bits_max), least squares on log bits, with a bootstrap interval."""
    df = _columns(df)
    _require(df, REQUIRED)
    used = _used(df, quantize)
    n_col, r_col = _numeric(df, "n"), _numeric(df, "R")
    peaks = []
    for n in np.unique(n_col[used][np.isfinite(n_col[used])]):
        rows = used[(n_col[used] == n) & np.isfinite(r_col[used])]
        if len(rows):
            i = rows[np.argmax(r_col[rows])]
            peaks.append(
                {
                    "n": int(n),
                    "R": float(r_col[i]),
                    "R_max": float(_numeric(df, "R_max")[i]),
                    "point": df["point"][i],
                    "model": df["model"][i],
                    "P": float(_numeric(df, "P")[i]),
                    "bits": float(_numeric(df, "bits")[i]),
                }
            )
    form = "bits = min(R* P, bits_max)"
    rows, (log_p, log_cap, log_bits) = _positive_logs(df, used, ("P", "bits_max", "bits"))
    base = {"peaks": peaks, "below_cap": int(np.sum(log_bits < log_cap))}
    too_few = _too_few(form, len(rows), 1)
    if too_few:
        return {**too_few, **base}
    res = _capacity_fit(log_p, log_cap, log_bits)
    if res is None:
        message = "every run is at its bits_max: R* has only a lower bound"
        return _not_fitted(form, len(rows), message, **base)
    result = {"form": form, "n_runs": len(rows), **base, "converged": bool(res.success)}
    result["message"] = str(res.message)
    if not res.success:
        return {**result, "last": {"R_star": math.exp(res.x)}}

    def refit(idx):
        draw = _capacity_fit(log_p[idx], log_cap[idx], log_bits[idx])
        return {"R_star": math.exp(draw.x)} if draw is not None and draw.success else None

    boot = _bootstrap(refit, len(rows), draws, seed)
    return {**result, "params": {"R_star": math.exp(res.x)}, **boot}


# -- (b) power laws -------------------------------------------------------------------------


def _line(u: np.ndarray, v: np.ndarray) -> tuple[float, float, float] | None:
    """Least-squares v = k + b u: (k, b, R^2), None when u does not vary."""
    du, dv = u - u.mean(), v - v.mean()
    if not np.any(du):
        return None
    b = float(du @ dv / (du @ du))
    ss = float(dv @ dv)
    r2 = 1 - float(((dv - b * du) ** 2).sum()) / ss if ss > 0 else 1.0
    return float(v.mean() - b * u.mean()), b, r2


def power_law(
    x: Sequence,
    y: Sequence,
    offset: bool = False,
    seed: int = 0,
    draws: int = 500,
    maxiter: int = 2000,
) -> dict:
    """y = a x^b, a line in log-log space (closed form); or, with offset, y = c + a x^b
    (a, c > 0) by least squares on log residuals log(c + a x^b) - log y from several
    starts. Rows where x or y is not finite and positive are left out. R^2 is of log y."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    lx, ly = np.log(x[ok]), np.log(y[ok])
    n = len(lx)
    if not offset:
        form = "y = a x^b"
        too_few = _too_few(form, n, 2)
        if too_few:
            return too_few
        line = _line(lx, ly)
        if line is None:
            return _not_fitted(form, n, "x does not vary")

        def refit(idx):
            fit = _line(lx[idx], ly[idx])
            return None if fit is None else {"a": math.exp(fit[0]), "b": fit[1]}

        params = {"a": math.exp(line[0]), "b": line[1]}
        result = {"form": form, "n_runs": n, "converged": True, "message": "closed form"}
        return {**result, "params": params, "r2": line[2], **_bootstrap(refit, n, draws, seed)}

    form = "y = c + a x^b"
    too_few = _too_few(form, n, 3)
    if too_few:
        return too_few
    # c + a x^b = exp(logsumexp(log c, log a0 + b u)) with u = log x - m, so a = a0 e^(-b m)
    m = lx.mean()
    u = lx - m

    def make_fun(idx):
        ui = u[idx]

        def terms(theta):
            log_c, log_a0, b = theta
            t = np.stack([np.full(len(ui), log_c), log_a0 + b * ui])
            return t, lambda g: np.array([g[0].sum(), g[1].sum(), g[1] @ ui])

        return _lse_objective(terms, ly[idx], "squares")

    def report(theta):
        log_c, log_a0, b = (float(v) for v in theta)
        return {"a": math.exp(log_a0 - b * m), "b": b, "c": math.exp(log_c)}

    # starts: exponents of the sign of the plain fit's, c a fraction of min y, a0 to match
    line = _line(lx, ly)
    slope = line[1] if line else 1.0
    exponents = {slope, *(math.copysign(s, slope) for s in (0.1, 0.3, 1.0, 3.0))}
    starts = []
    for b, frac in itertools.product(sorted(exponents), (0.01, 0.3, 0.7, 0.95)):
        c = frac * float(np.exp(ly.min()))
        log_a0 = float(np.median(np.log(np.maximum(np.exp(ly) - c, 1e-300)) - b * u))
        starts.append((math.log(c), log_a0, b))
    options = {"maxiter": maxiter, "draws": draws, "seed": seed}
    result = _nonlinear(form, make_fun, report, n, starts, **options)
    if "params" in result and result["params"]["c"] < 1e-6 * math.exp(ly.min()):
        message = "c tends to 0 (the boundary): no offset, see the plain power law"
        params = result.pop("params")
        result.pop("intervals")
        return {**result, "converged": False, "message": message, "last": params}
    if "params" in result:  # the loss is the sum of squared log residuals
        result["r2"] = 1 - result["loss"] / float(((ly - ly.mean()) ** 2).sum())
    return result


# -- (c) Kaplan -----------------------------------------------------------------------------


def kaplan(
    df: Table,
    with_steps: bool,
    params_column: str = "P",
    quantize: str = "none",
    draws: int = 200,
    seed: int = 0,
    maxiter: int = 5000,
) -> dict:
    """Kaplan et al. (2001.08361) on final_loss: L(N) = (Nc/N)^aN (eq. 1.1) or, with steps,
    L(N, S) = (Nc/N)^aN + (Sc/S)^aS (eq. 1.6); least squares on log L in the parameters
    theta = (log Nc, aN[, log Sc, aS]), from a grid of exponents, each start's log Nc
    (log Sc) set to fit the mean log loss (half of the loss per term)."""
    df = _columns(df)
    form = KAPLAN_NS if with_steps else KAPLAN_N
    names = (params_column, "final_loss") + (("steps",) if with_steps else ())
    rows, (ln, ll, *ls) = _positive_logs(df, _used(df, quantize), names)
    ls = ls[0] if with_steps else None
    n = len(rows)
    too_few = _too_few(form, n, 4 if with_steps else 2)
    if too_few:
        return {**too_few, "N": params_column}

    def make_fun(idx):
        lni, lsi = ln[idx], (ls[idx] if with_steps else None)

        def terms(theta):
            gap_n = theta[0] - lni  # log Nc - log N
            if not with_steps:
                return (theta[1] * gap_n)[None], lambda g: np.array(
                    [theta[1] * g[0].sum(), g[0] @ gap_n]
                )
            gap_s = theta[2] - lsi  # log Sc - log S
            t = np.stack([theta[1] * gap_n, theta[3] * gap_s])
            return t, lambda g: np.array(
                [theta[1] * g[0].sum(), g[0] @ gap_n, theta[3] * g[1].sum(), g[1] @ gap_s]
            )

        return _lse_objective(terms, ll[idx], "squares")

    def report(theta):
        names = ("Nc", "aN", "Sc", "aS")[: len(theta)]
        return {
            k: math.exp(v) if k.endswith("c") else float(v)
            for k, v in zip(names, theta, strict=True)
        }

    exponents = (0.03, 0.1, 0.3, 1.0)
    if with_steps:
        half = ll - math.log(2)  # each term starts at half the loss
        starts = [
            (float(np.mean(half / an + ln)), an, float(np.mean(half / a_s + ls)), a_s)
            for an, a_s in itertools.product(exponents, exponents)
        ]
    else:
        starts = [(float(np.mean(ll / an + ln)), an) for an in exponents]
    options = {"maxiter": maxiter, "draws": draws, "seed": seed}
    return {**_nonlinear(form, make_fun, report, n, starts, **options), "N": params_column}


# -- (d) Chinchilla -------------------------------------------------------------------------


def chinchilla(
    df: Table,
    params_column: str = "P",
    quantize: str = "none",
    grid: Sequence[Sequence[float]] = CHINCHILLA_GRID,
    draws: int = 200,
    seed: int = 0,
    maxiter: int = 5000,
) -> dict:
    """Hoffmann et al.'s L(N, D) = E + A/N^alpha + B/D^beta (N = params_column, D = tokens,
    L = final_loss) fitted as Besiroglu et al. (2404.10102) do: minimize the sum over runs
    of Huber(delta=1e-3) of LSE(a - alpha log N, b - beta log D, e) - log L by L-BFGS-B from
    every start of `grid` (values of a, alpha, b, beta, e; a = log A, b = log B, e = log E),
    keeping the best."""
    df = _columns(df)
    names = (params_column, "tokens", "final_loss")
    rows, (ln, ld, ll) = _positive_logs(df, _used(df, quantize), names)
    n = len(rows)
    too_few = _too_few(CHINCHILLA, n, 5)
    if too_few:
        return {**too_few, "N": params_column, "D": "tokens"}

    def make_fun(idx):
        lni, ldi = ln[idx], ld[idx]

        def terms(theta):
            a, alpha, b, beta, e = theta
            t = np.stack([a - alpha * lni, b - beta * ldi, np.full(len(lni), e)])
            return t, lambda g: np.array(
                [g[0].sum(), -g[0] @ lni, g[1].sum(), -g[1] @ ldi, g[2].sum()]
            )

        return _lse_objective(terms, ll[idx], "huber")

    def report(theta):
        a, alpha, b, beta, e = (float(v) for v in theta)
        return {"E": math.exp(e), "A": math.exp(a), "B": math.exp(b), "alpha": alpha, "beta": beta}

    starts = list(itertools.product(*grid))
    options = {"maxiter": maxiter, "draws": draws, "seed": seed}
    result = _nonlinear(CHINCHILLA, make_fun, report, n, starts, **options)
    return {**result, "N": params_column, "D": "tokens"}


# -- everything, for a sweep ----------------------------------------------------------------


def _has_data(df, rows: np.ndarray, names: Sequence[str]) -> str | None:
    """None when every named column has a finite value in `rows`, else the reason."""
    for name in names:
        if name not in df or not np.isfinite(_numeric(df, name)[rows]).any():
            return f"no data in column {name}"
    return None


def _skipped(form: str, reason: str) -> dict:
    return _not_fitted(form, 0, reason, skipped=True)


def fit_all(sweep_dir: Path, metric: str | None = None, against: str | None = None) -> dict:
    """Fit every form to DIR/runs.parquet (rows with status done, quantize none) and write
    DIR/fit.json and DIR/report.md. The power laws are `metric` against `against` per N
    (default: bits against P); Kaplan and Chinchilla run where their columns have data."""
    sweep_dir = Path(sweep_dir)
    path = sweep_dir / "runs.parquet"
    if not path.is_file():
        raise InputError(f"{path}: not found")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"{path}: not a readable parquet file ({e})") from None
    df = table.to_pydict()
    _require(df, REQUIRED)
    metric, against = metric or "bits", against or "P"
    x, y = _numeric(df, against), _numeric(df, metric)
    used = _used(df, "none")
    n_col = _numeric(df, "n")

    per_n = []
    for n in np.unique(n_col[used][np.isfinite(n_col[used])]):
        rows = used[n_col[used] == n]
        plain, offset = power_law(x[rows], y[rows]), power_law(x[rows], y[rows], offset=True)
        per_n.append({"n": int(n), "plain": plain, "offset": offset})

    kaplan_fits = {}
    for with_steps, form in ((False, KAPLAN_N), (True, KAPLAN_NS)):
        reason = _has_data(df, used, ("P", "final_loss") + (("steps",) if with_steps else ()))
        kaplan_fits["N_S" if with_steps else "N"] = (
            _skipped(form, reason) if reason else kaplan(df, with_steps)
        )
    chinchilla_fits = {}
    for column in ("P", "P_nonembedding"):
        reason = _has_data(df, used, (column, "tokens", "final_loss"))
        chinchilla_fits[column] = _skipped(CHINCHILLA, reason) if reason else chinchilla(df, column)

    result = {
        "sweep": str(sweep_dir),
        "rows": table.num_rows,
        "runs_used": len(used),
        "capacity": capacity_law(df),
        "power_law": {"metric": metric, "against": against, "per_n": per_n},
        "kaplan": kaplan_fits,
        "chinchilla": chinchilla_fits,
    }
    atomic.write_json(sweep_dir / "fit.json", result)
    atomic.write_bytes(sweep_dir / "report.md", _report(result).encode())
    return result


def _summary(fit: dict, extra: str = "") -> str:
    """One line: the parameters with their intervals, or why there are none."""
    if fit.get("skipped"):
        return f"skipped: {fit['message']}"
    if not fit["converged"]:
        return f"did not converge: {fit['message']}"
    intervals = fit["intervals"] or {}
    values = []
    for name, value in fit["params"].items():
        low_high = intervals.get(name)
        span = f" [{low_high[0]:.4g}, {low_high[1]:.4g}]" if low_high else " [no interval]"
        values.append(f"{name} = {value:.4g}{span}")
    boot = fit["bootstrap"]
    return (
        f"{', '.join(values)}{extra}; {fit['n_runs']} runs; converged; "
        f"{boot['converged']} of {boot['draws']} bootstrap draws converged"
    )


def _r2(fit: dict) -> str:
    return f", R^2 = {fit['r2']:.4f}" if "r2" in fit else ""


def _report(result: dict) -> str:
    capacity = result["capacity"]
    lines = [
        f"# Scaling-law fits: {result['sweep']}",
        "",
        f"{result['runs_used']} runs used (status done, quantize none) of {result['rows']} rows.",
        "Intervals [low, high] are 95% bootstrap intervals (percentiles 2.5 and 97.5 of the",
        "refitted parameters over runs resampled with replacement, seeded).",
        "",
        "## Capacity law: bits = min(R* P, bits_max)",
        "",
        "| N | peak R | R_max | run | model | P | bits |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in capacity["peaks"]:
        lines.append(
            f"| {p['n']} | {p['R']:.4g} | {p['R_max']:.4g} | {p['point']} | {p['model']} "
            f"| {p['P']:.4g} | {p['bits']:.4g} |"
        )
    lines += ["", f"{_summary(capacity)} ({capacity['below_cap']} runs below bits_max)."]
    power = result["power_law"]
    lines += ["", f"## Power laws per N: {power['metric']} against {power['against']}", ""]
    for row in power["per_n"]:
        plain, offset = row["plain"], row["offset"]
        lines.append(f"- N = {row['n']}: y = a x^b: {_summary(plain, _r2(plain))}")
        lines.append(f"  y = c + a x^b: {_summary(offset, _r2(offset))}")
    lines += ["", "## Kaplan et al. (final_loss; N = P, S = steps)", ""]
    for fit in result["kaplan"].values():
        lines.append(f"- {fit['form']}: {_summary(fit)}")
    lines += ["", "## Chinchilla, Epoch AI's refit (final_loss; D = tokens)", ""]
    for column, fit in result["chinchilla"].items():
        lines.append(f"- N = {column}: {fit['form']}: {_summary(fit)}")
    return "\n".join(lines) + "\n"
