"""Scaling-law fits over a sweep's results table (docs/design.md §10).

Forms:
- capacity law, bits = min(R* P, bits_max) (Part 3.3: a peak capacity ratio R*);
- power law y = a x^b, and with an offset y = c + a x^b;
- Kaplan et al. (2001.08361): L(N) = (Nc/N)^aN and L(N, S) = (Nc/N)^aN + (Sc/S)^aS;
- Chinchilla (Hoffmann et al. 2022, refitted as Besiroglu et al. 2404.10102 do):
  L(N, D) = E + A/N^alpha + B/D^beta;
- memorization capacity of random-sequence runs: each model's plateau of memorized bits
  against dataset bits (Morris et al. 2025; `bioknow.study.plateau`).

The nonlinear forms are fitted in log space: the log of the prediction, written as a
log-sum-exp of its terms, minus the log of the observation, minimized by L-BFGS-B from
several starts. A fit is `converged` only when scipy reports success, the best loss was
reached by at least two starts or the gradient there is small, and every parameter is
finite; otherwise its parameters are kept apart (`last`) and never reported as a result.
Intervals are the 2.5 and 97.5 percentiles of the parameters refitted on rows resampled
with replacement, seeded. A converged fit with an interval wider than DECADES orders of
magnitude is marked unidentified, with the reason.

Nothing here raises on awkward data. Runs whose values are missing, not finite or not
positive are left out of a fit that takes their logs; a fit whose remaining runs cannot
determine its parameters (fewer runs than parameters + 1, a variable taking too few
distinct values) is `skipped` with "not enough data for this fit: <reason>"; a start or a
bootstrap draw that overflows counts as one that did not converge.
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

from bioknow.base import atomic
from bioknow.base.errors import InputError
from bioknow.study import plateau

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
CAPACITY = "bits = min(R* P, bits_max)"
REQUIRED = ("status", "quantize")  # what makes a table a sweep's results table
NOT_ENOUGH = "not enough data for this fit: "
# what a start, a bootstrap draw or a whole fit may raise on awkward numbers: overflow,
# a log or a power outside its domain, a singular matrix
NUMERIC_ERRORS = (ArithmeticError, ValueError, np.linalg.LinAlgError)
MAX_EXP = 709.0  # math.exp overflows a float just above 709.78
DECADES = 6  # a 95% interval wider than this many orders of magnitude: not identified


# -- the results table ----------------------------------------------------------------------


def _columns(df: Table) -> Mapping[str, Sequence]:
    return df.to_pydict() if isinstance(df, pa.Table) else df


def _require(df: Mapping[str, Sequence], names: Sequence[str]) -> None:
    missing = [name for name in names if name not in df]
    if missing:
        raise InputError(f"unknown column(s): {', '.join(missing)}")


def _numeric(df: Mapping[str, Sequence], name: str) -> np.ndarray:
    """A column as floats (None -> NaN); InputError when it is absent or not numeric."""
    if name not in df:
        raise InputError(f"unknown column {name!r}")
    try:
        return np.array([np.nan if v is None else v for v in df[name]], dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"column {name!r} is not numeric") from None


def _values(df: Mapping[str, Sequence], name: str, size: int) -> np.ndarray:
    """A column as floats, all NaN when the table has no such column."""
    return _numeric(df, name) if name in df else np.full(size, np.nan)


def _used(df: Mapping[str, Sequence], quantize: str) -> np.ndarray:
    """Indices of the rows with status "done" and this quantization."""
    _require(df, REQUIRED)
    status, quant = np.array(df["status"], dtype=object), np.array(df["quantize"], dtype=object)
    return np.flatnonzero((status == "done") & (quant == quantize))


def _positive_logs(df, rows: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, list, str]:
    """The rows among `rows` where every named column is finite and positive, the logs of
    those columns on them, and a phrase saying how many rows that is (and why not more)."""
    missing = [name for name in names if name not in df]
    if missing:
        empty = [np.empty(0) for _ in names]
        return rows[:0], empty, f"the table has no column {', '.join(missing)}"
    values = [_numeric(df, name)[rows] for name in names]
    ok = np.logical_and.reduce([np.isfinite(v) & (v > 0) for v in values])
    phrase = f"{int(ok.sum())} of {len(rows)} runs have finite, positive {', '.join(names)}"
    faults = []
    for name, v in zip(names, values, strict=True):
        for count, what in ((np.sum(~np.isfinite(v)), "not finite"), (np.sum(v <= 0), "<= 0")):
            faults += [f"{name} {what} in {count}"] if count else []
    phrase += f" ({', '.join(faults)})" if faults else ""
    with np.errstate(all="ignore"):
        return rows[ok], [np.log(v[ok]) for v in values], phrase


# -- results --------------------------------------------------------------------------------


def _not_fitted(form: str, n_runs: int, message: str, **extra) -> dict:
    return {"form": form, "n_runs": n_runs, "converged": False, "message": message, **extra}


def _lacking(form: str, n_runs: int, reason: str, **extra) -> dict:
    """A fit not attempted: the runs cannot determine its parameters."""
    return _not_fitted(form, n_runs, NOT_ENOUGH + reason, skipped=True, **extra)


def _distinct(values: np.ndarray) -> int:
    return len(np.unique(np.round(values, 9)))


def _shortage(n_params: int, phrase: str, variables: Mapping[str, np.ndarray], distinct: int):
    """Why these runs cannot determine a form of n_params parameters, or None: fewer runs
    than n_params + 1, or a variable (name -> values on the runs) with fewer than
    `distinct` distinct values."""
    n = len(next(iter(variables.values())))
    if n < n_params + 1:
        params = f"{n_params} parameters need" if n_params > 1 else "1 parameter needs"
        return f"{phrase}; {params} at least {n_params + 1} runs"
    for name, values in variables.items():
        count = _distinct(values)
        if count < distinct:
            return (
                f"{name} takes {count} distinct value(s) on these runs; the form needs {distinct}"
            )
    return None


def _varied(variables: Sequence[np.ndarray], distinct: int, idx: np.ndarray) -> bool:
    """Whether rows idx still hold `distinct` values of every variable (a resample)."""
    return all(_distinct(v[idx]) >= distinct for v in variables)


def _exp(value: float) -> float:
    """e^value, infinite rather than an OverflowError where a float cannot hold it."""
    return math.exp(value) if value <= MAX_EXP else math.inf


def _finite(params: Mapping[str, float]) -> bool:
    return all(math.isfinite(v) for v in params.values())


def _bootstrap(refit: Callable, n: int, draws: int, seed: int) -> dict:
    """Refit on `draws` resamples of the n rows; the percentiles 2.5 and 97.5 of each
    parameter over the draws whose fit converged (refit gives None for the others, and a
    draw that overflows counts as one of them)."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(draws):
        idx = rng.integers(0, n, n)
        try:
            sample = refit(idx)
        except NUMERIC_ERRORS:
            sample = None
        if sample is not None and _finite(sample):
            samples.append(sample)
    info = {"draws": draws, "converged": len(samples), "seed": seed}
    if not samples:
        return {"intervals": None, "bootstrap": info}
    intervals = {
        name: [float(v) for v in np.percentile([s[name] for s in samples], [2.5, 97.5])]
        for name in samples[0]
    }
    return {"intervals": intervals, "bootstrap": info}


def _identified(result: dict) -> dict:
    """A converged fit with its intervals, marked `identified` or not: a positive parameter
    whose 95% interval spans more than DECADES orders of magnitude is not pinned down by
    the runs (`unidentified` says which and how wide), whatever the optimizer reports."""
    for name, (low, high) in (result.get("intervals") or {}).items():
        if low > 0 and high > 0 and math.log10(high / low) > DECADES:
            why = (
                f"{name}'s 95% interval [{low:.4g}, {high:.4g}] spans "
                f"{math.log10(high / low):.0f} orders of magnitude: these runs do not pin it down"
            )
            return {**result, "identified": False, "unidentified": why}
    return {**result, "identified": True}


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


def _starts_run(fun: Callable, starts: Sequence, maxiter: int) -> list:
    """(loss, start, result) of L-BFGS-B from every start whose run ends at a finite loss;
    a start that overflows or leaves the function's domain is dropped."""
    runs = []
    with np.errstate(all="ignore"), _one_blas_thread():
        for x0 in starts:
            try:
                res = minimize(
                    fun, np.asarray(x0, float), jac=True, method="L-BFGS-B",
                    options={**LBFGS, "maxiter": maxiter},
                )  # fmt: skip
            except NUMERIC_ERRORS:
                continue
            if np.isfinite(res.fun) and np.all(np.isfinite(res.x)):
                runs.append((float(res.fun), tuple(x0), res))
    return sorted(runs, key=lambda run: run[0])


def _multistart(fun: Callable, starts: Sequence, maxiter: int) -> dict:
    """L-BFGS-B from every start; the best result and whether it converged: scipy's success
    flag and the best loss reached by at least two starts or a small gradient. Among runs
    tied with the best (within the agreement tolerance) a successful one is preferred."""
    runs = _starts_run(fun, starts, maxiter)
    if not runs:
        return {"converged": False, "message": "the loss is not finite from any start"}
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
    form: str,
    make_fun: Callable,
    report: Callable,
    variables: tuple[Sequence[np.ndarray], int],
    starts: Sequence,
    **options,
) -> dict:
    """Fit a log-sum-exp form from every start, then bootstrap it, each draw from the best
    fit and the best starts. make_fun(idx) gives the objective on rows idx; report(theta)
    names the parameters; variables = (columns, k): a resample in which a column takes
    fewer than k distinct values cannot determine the fit. options: maxiter, draws, seed."""
    maxiter, draws, seed = options["maxiter"], options["draws"], options["seed"]
    columns, distinct = variables
    n = len(columns[0])
    fit = _multistart(make_fun(np.arange(n)), starts, maxiter)
    result = {"form": form, "n_runs": n, "converged": fit["converged"], "message": fit["message"]}
    if "x" not in fit:
        return result
    result.update({k: fit[k] for k in ("loss", "starts", "agree", "gradient_norm")})
    params = report(fit["x"])
    if fit["converged"] and not _finite(params):
        infinite = [name for name, value in params.items() if not math.isfinite(value)]
        message = f"{', '.join(infinite)} grow(s) without bound: these runs do not pin it down"
        return {**result, "converged": False, "message": message, "last": params}
    if not fit["converged"]:
        return {**result, "last": params}
    boot_starts = [fit["x"], *fit["best_starts"]]

    def refit(idx):
        if len(np.unique(idx)) < len(fit["x"]) + 1 or not _varied(columns, distinct, idx):
            return None
        draw = _multistart(make_fun(idx), boot_starts, maxiter)
        return report(draw["x"]) if draw["converged"] else None

    boot = _bootstrap(refit, n, draws, seed)
    if boot["bootstrap"]["converged"] < draws / 2:  # the runs do not pin the parameters down
        message = (
            f"only {boot['bootstrap']['converged']} of {draws} bootstrap refits "
            "converged: these runs do not determine the parameters"
        )
        return {**result, "converged": False, "message": message, "last": params}
    return _identified({**result, "params": params, **boot})


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


def _peaks(df: Mapping[str, Sequence], used: np.ndarray) -> list[dict]:
    """Per N, the run of highest R (Part 3.3's peak capacity ratio) and its figures."""
    size = len(df["status"])
    n_col, r_col = _values(df, "n", size), _values(df, "R", size)
    figures = {name: _values(df, name, size) for name in ("R_max", "P", "bits")}
    peaks = []
    for n in np.unique(n_col[used][np.isfinite(n_col[used])]):
        rows = used[(n_col[used] == n) & np.isfinite(r_col[used])]
        if len(rows):
            i = rows[np.argmax(r_col[rows])]
            peak = {"n": int(n), "R": float(r_col[i])}
            peak.update({name: float(column[i]) for name, column in figures.items()})
            peak.update({name: df[name][i] if name in df else None for name in ("point", "model")})
            peaks.append(peak)
    return peaks


def capacity_law(df: Table, quantize: str = "none", draws: int = 500, seed: int = 0) -> dict:
    """Per N the peak capacity ratio max R over runs (and the run reaching it); and one R*
    for bits = min(R* P, bits_max), least squares on log bits, with a bootstrap interval."""
    df = _columns(df)
    used = _used(df, quantize)
    rows, (log_p, log_cap, log_bits), phrase = _positive_logs(df, used, ("P", "bits_max", "bits"))
    base = {"peaks": _peaks(df, used), "below_cap": int(np.sum(log_bits < log_cap))}
    reason = _shortage(1, phrase, {"P": log_p}, 1)
    if reason:
        return _lacking(CAPACITY, len(rows), reason, **base)
    res = _capacity_fit(log_p, log_cap, log_bits)
    if res is None:
        message = "every run is at its bits_max: R* has only a lower bound"
        return _not_fitted(CAPACITY, len(rows), message, **base)
    result = {"form": CAPACITY, "n_runs": len(rows), **base, "converged": bool(res.success)}
    result["message"] = str(res.message)
    if not res.success:
        return {**result, "last": {"R_star": _exp(res.x)}}

    def refit(idx):
        draw = _capacity_fit(log_p[idx], log_cap[idx], log_bits[idx])
        return {"R_star": _exp(draw.x)} if draw is not None and draw.success else None

    boot = _bootstrap(refit, len(rows), draws, seed)
    return _identified({**result, "params": {"R_star": _exp(res.x)}, **boot})


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


def _plain_power_law(lx: np.ndarray, ly: np.ndarray, seed: int, draws: int) -> dict:
    """y = a x^b: a least-squares line in log-log space (closed form), bootstrapped."""
    n = len(lx)
    line = _line(lx, ly)

    def refit(idx):
        fit = _line(lx[idx], ly[idx])
        return None if fit is None else {"a": _exp(fit[0]), "b": fit[1]}

    params = {"a": _exp(line[0]), "b": line[1]}
    result = {"form": "y = a x^b", "n_runs": n, "converged": True, "message": "closed form"}
    if not _finite(params):
        return {**result, "converged": False, "message": "a overflows a float", "last": params}
    boot = _bootstrap(refit, n, draws, seed)
    return _identified({**result, "params": params, "r2": line[2], **boot})


def _offset_starts(lx: np.ndarray, ly: np.ndarray, u: np.ndarray) -> list[tuple]:
    """Starts (log c, log a0, b) for y = c + a0 e^(b u): exponents of the sign of the plain
    fit's, c a fraction of min y, a0 to match."""
    line = _line(lx, ly)
    slope = line[1] if line else 1.0
    exponents = {slope, *(math.copysign(s, slope) for s in (0.1, 0.3, 1.0, 3.0))}
    starts = []
    with np.errstate(all="ignore"):
        for b, frac in itertools.product(sorted(exponents), (0.01, 0.3, 0.7, 0.95)):
            log_c = math.log(frac) + float(ly.min())
            rest = np.log(np.maximum(-np.expm1(log_c - ly), 1e-300)) + ly  # log(y - c)
            starts.append((log_c, float(np.median(rest - b * u)), b))
    return starts


def _offset_power_law(lx: np.ndarray, ly: np.ndarray, **options) -> dict:
    """y = c + a x^b (a, c > 0) by least squares on log residuals log(c + a x^b) - log y
    from several starts; c + a x^b = exp(logsumexp(log c, log a0 + b u)) with u = log x - m,
    so a = a0 e^(-b m)."""
    form = "y = c + a x^b"
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
        return {"a": _exp(log_a0 - b * m), "b": b, "c": _exp(log_c)}

    starts = _offset_starts(lx, ly, u)
    result = _nonlinear(form, make_fun, report, ([u], 3), starts, **options)
    if "params" in result and result["params"]["c"] < 1e-6 * math.exp(ly.min()):
        message = "c tends to 0 (the boundary): no offset, see the plain power law"
        params = result.pop("params")
        for key in ("intervals", "identified", "unidentified"):
            result.pop(key, None)
        return {**result, "converged": False, "message": message, "last": params}
    if "params" in result:  # the loss is the sum of squared log residuals
        spread = float(((ly - ly.mean()) ** 2).sum())
        result["r2"] = 1 - result["loss"] / spread if spread > 0 else 1.0
    return result


def power_law(
    x: Sequence,
    y: Sequence,
    offset: bool = False,
    seed: int = 0,
    draws: int = 500,
    maxiter: int = 2000,
    names: tuple[str, str] = ("x", "y"),
) -> dict:
    """y = a x^b, a line in log-log space (closed form); or, with offset, y = c + a x^b
    (a, c > 0) by least squares on log residuals from several starts. Rows where x or y is
    not finite and positive are left out. R^2 is of log y. `names` name x and y in
    messages."""
    df = dict(zip(names, (x, y), strict=True))
    _, (lx, ly), phrase = _positive_logs(df, np.arange(len(x)), names)
    form = "y = c + a x^b" if offset else "y = a x^b"
    reason = _shortage(3 if offset else 2, phrase, {names[0]: lx}, 3 if offset else 2)
    if reason:
        return _lacking(form, len(lx), reason)
    if not offset:
        return _plain_power_law(lx, ly, seed, draws)
    return _offset_power_law(lx, ly, maxiter=maxiter, draws=draws, seed=seed)


# -- (c) Kaplan -----------------------------------------------------------------------------


def _kaplan_terms(lni: np.ndarray, lsi: np.ndarray | None) -> Callable:
    """The log terms aN (log Nc - log N) [and aS (log Sc - log S)] and their gradient."""

    def terms(theta):
        gap_n = theta[0] - lni  # log Nc - log N
        if lsi is None:
            return (theta[1] * gap_n)[None], lambda g: np.array(
                [theta[1] * g[0].sum(), g[0] @ gap_n]
            )
        gap_s = theta[2] - lsi  # log Sc - log S
        t = np.stack([theta[1] * gap_n, theta[3] * gap_s])
        return t, lambda g: np.array(
            [theta[1] * g[0].sum(), g[0] @ gap_n, theta[3] * g[1].sum(), g[1] @ gap_s]
        )

    return terms


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
    (log Sc) set to fit the mean log loss (half of the loss per term). N needs 2 distinct
    values, or 3 of N and of S for the sum of two power laws."""
    df = _columns(df)
    form = KAPLAN_NS if with_steps else KAPLAN_N
    names = (params_column, "final_loss") + (("steps",) if with_steps else ())
    rows, (ln, ll, *ls), phrase = _positive_logs(df, _used(df, quantize), names)
    ls = ls[0] if with_steps else None
    variables = {params_column: ln, **({"steps": ls} if with_steps else {})}
    distinct = 3 if with_steps else 2
    reason = _shortage(4 if with_steps else 2, phrase, variables, distinct)
    if reason:
        return _lacking(form, len(rows), reason, N=params_column)

    def make_fun(idx):
        terms = _kaplan_terms(ln[idx], ls[idx] if with_steps else None)
        return _lse_objective(terms, ll[idx], "squares")

    def report(theta):
        names = ("Nc", "aN", "Sc", "aS")[: len(theta)]
        return {
            k: _exp(v) if k.endswith("c") else float(v) for k, v in zip(names, theta, strict=True)
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
    checked = (list(variables.values()), distinct)
    return {**_nonlinear(form, make_fun, report, checked, starts, **options), "N": params_column}


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
    keeping the best. N and D each need 3 distinct values (E shares the constant)."""
    df = _columns(df)
    names = (params_column, "tokens", "final_loss")
    rows, (ln, ld, ll), phrase = _positive_logs(df, _used(df, quantize), names)
    reason = _shortage(5, phrase, {params_column: ln, "tokens": ld}, 3)
    if reason:
        return _lacking(CHINCHILLA, len(rows), reason, N=params_column, D="tokens")

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
        return {"E": _exp(e), "A": _exp(a), "B": _exp(b), "alpha": alpha, "beta": beta}

    starts = list(itertools.product(*grid))
    options = {"maxiter": maxiter, "draws": draws, "seed": seed}
    result = _nonlinear(CHINCHILLA, make_fun, report, ([ln, ld], 3), starts, **options)
    return {**result, "N": params_column, "D": "tokens"}


# -- everything, for a sweep ----------------------------------------------------------------


def _guarded(form: str, fit: Callable, *args, **kwargs) -> dict:
    """fit(*args, **kwargs), or a fit that did not converge saying what it raised: one
    form failing on awkward data leaves the others standing."""
    try:
        return fit(*args, **kwargs)
    except Exception as e:  # reported in the fit, never a crash
        return _not_fitted(form, 0, f"the fit failed: {type(e).__name__}: {e}")


def _plain(value):
    """value with numpy scalars as Python numbers and non-finite floats as None (JSON has
    no NaN or infinity)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _read_table(sweep_dir: Path) -> pa.Table:
    path = sweep_dir / "runs.parquet"
    if not path.is_file():
        raise InputError(f"{path}: not found")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(f"{path}: not a readable parquet file ({reason})") from None
    missing = [name for name in REQUIRED if name not in table.column_names]
    if missing:
        raise InputError(f"{path}: not a sweep's results table (no column {', '.join(missing)})")
    return table


def _power_laws(df, used: np.ndarray, metric: str, against: str) -> list[dict]:
    """y = a x^b and y = c + a x^b of metric against `against`, per N."""
    size = len(df["status"])
    x, y, n_col = (_values(df, name, size) for name in (against, metric, "n"))
    per_n = []
    for n in np.unique(n_col[used][np.isfinite(n_col[used])]):
        rows = used[n_col[used] == n]
        names = (against, metric)
        plain = _guarded("y = a x^b", power_law, x[rows], y[rows], names=names)
        offset = _guarded("y = c + a x^b", power_law, x[rows], y[rows], offset=True, names=names)
        per_n.append({"n": int(n), "plain": plain, "offset": offset})
    return per_n


def fit_all(sweep_dir: Path, metric: str | None = None, against: str | None = None) -> dict:
    """Fit every form to DIR/runs.parquet (rows with status done, quantize none) and write
    DIR/fit.json and DIR/report.md, each atomically, whatever the fits make of the data.
    The power laws are `metric` against `against` per N (default: bits against P).
    InputError (and nothing written) only when the table is missing or unreadable, or a
    column named here is absent or not numeric."""
    sweep_dir = Path(sweep_dir)
    table = _read_table(sweep_dir)
    df = table.to_pydict()
    for name in (metric, against):
        if name is not None:
            _numeric(df, name)
    metric, against = metric or "bits", against or "P"
    used = _used(df, "none")
    kaplan_fits = {
        "N": _guarded(KAPLAN_N, kaplan, df, False),
        "N_S": _guarded(KAPLAN_NS, kaplan, df, True),
    }
    chinchilla_fits = {
        column: _guarded(CHINCHILLA, chinchilla, df, column) for column in ("P", "P_nonembedding")
    }
    result = {
        "sweep": str(sweep_dir),
        "rows": table.num_rows,
        "runs_used": len(used),
        "capacity": _guarded(CAPACITY, capacity_law, df),
        "power_law": {
            "metric": metric,
            "against": against,
            "per_n": _power_laws(df, used, metric, against),
        },
        "kaplan": kaplan_fits,
        "chinchilla": chinchilla_fits,
        "memorization": plateau.capacities(df),
    }
    result = _plain(result)
    atomic.write_bytes(sweep_dir / "report.md", _report(result).encode())
    atomic.write_json(sweep_dir / "fit.json", result)
    return result


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _summary(fit: dict, extra: str = "") -> str:
    """One line: the parameters with their intervals, or why there are none."""
    if fit.get("skipped"):
        return fit["message"]
    if not fit["converged"]:
        return f"did not converge: {fit['message']}"
    intervals = fit["intervals"] or {}
    values = []
    for name, value in fit["params"].items():
        low_high = intervals.get(name)
        span = f" [{_number(low_high[0])}, {_number(low_high[1])}]" if low_high else ""
        values.append(f"{name} = {_number(value)}{span or ' [no interval]'}")
    boot = fit["bootstrap"]
    verdict = (
        "converged" if fit.get("identified", True) else f"unidentified ({fit['unidentified']})"
    )
    return (
        f"{', '.join(values)}{extra}; {fit['n_runs']} runs; {verdict}; "
        f"{boot['converged']} of {boot['draws']} bootstrap draws converged"
    )


def _r2(fit: dict) -> str:
    return f", R^2 = {fit['r2']:.4f}" if fit.get("r2") is not None else ""


def _report(result: dict) -> str:
    """report.md: every fit's parameters and intervals, or why it has none."""
    capacity = result["capacity"]
    lines = [
        f"# Scaling-law fits: {result['sweep']}",
        "",
        f"{result['runs_used']} runs used (status done, quantize none) of {result['rows']} rows.",
        "Intervals [low, high] are 95% bootstrap intervals (percentiles 2.5 and 97.5 of the",
        "refitted parameters over runs resampled with replacement, seeded).",
        "",
        f"## Capacity law: {CAPACITY}",
        "",
        "| N | peak R | R_max | run | model | P | bits |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in capacity.get("peaks", []):
        lines.append(
            f"| {p['n']} | {_number(p['R'])} | {_number(p['R_max'])} | {p['point']} "
            f"| {p['model']} | {_number(p['P'])} | {_number(p['bits'])} |"
        )
    below_cap = None if capacity.get("skipped") else capacity.get("below_cap")
    below = "" if below_cap is None else f" ({below_cap} runs below bits_max)"
    lines += ["", f"{_summary(capacity)}{below}."]
    power = result["power_law"]
    lines += ["", f"## Power laws per N: {power['metric']} against {power['against']}", ""]
    if not power["per_n"]:
        lines.append(f"{NOT_ENOUGH}no finished, unquantized run has a value of n")
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
    lines += plateau.report_lines(result.get("memorization", []))
    return "\n".join(lines) + "\n"
