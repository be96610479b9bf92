"""Memorization capacity: the plateau of a model's memorized bits as its dataset of
random sequences grows (Morris et al. 2025, arXiv 2505.24832, Sec. 3 and Figure 1).

Each run of a model gives a point (H, m): the bits of its dataset, H = N S log2 V
(`bits_max`), and the bits the model memorized of it, m (`bits`, unclamped; see
`bioknow.measure.memorization`). Below capacity m follows H; once the data hold more than the
model can, m stops growing: Morris et al. read a model's capacity from that plateau.

bioknow reads it as the mean of m over the points past the knee: those whose dataset is
larger than that of every point where the model memorized more than half of its dataset
(H < 2 m), so that the model is full rather than short of data (a small dataset the model
has not learnt, m <= 0 say, is not mistaken for a plateau). The mean, not the maximum
over all points: the maximum picks the largest noise and has no interval, the mean uses
every point on the plateau. Its 95% interval is a bootstrap over those points (with one
point: that point's own evaluation interval where its evaluation was a sample, else
none); the maximum over all points is reported beside it. A model none of whose points is
past the knee has no estimate (its largest dataset was too small), and says so. Bits per
parameter are given against P (Part 3.3's count) and against all parameters (`P_total`).
"""

from collections.abc import Mapping, Sequence

import numpy as np

KNEE = 2.0  # a point holding less than KNEE x the bits memorized of it is below the knee
BOOTSTRAP = 1000
SERIES = ("model", "exposures", "length", "symbols")  # the points of one plateau


def _value(row: dict, key: str) -> float:
    value = row.get(key)
    return float("nan") if value is None else float(value)


def capacity(points: list[dict], seed: int = 0) -> dict:
    """The plateau of one model's points (dicts with bits_max, bits, P, P_total and,
    for sampled evaluations, bits_ci95_low/high): capacity, interval, bits/param."""
    usable = [p for p in points if np.isfinite(_value(p, "bits")) and _value(p, "bits_max") > 0]
    if not usable:
        return {"points": 0, "capacity": None, "message": "no point with finite bits"}
    bits = np.array([p["bits"] for p in usable], dtype=float)
    dataset = np.array([p["bits_max"] for p in usable], dtype=float)
    below = dataset < KNEE * bits
    past = dataset > dataset[below].max() if below.any() else np.ones(len(bits), dtype=bool)
    out = {
        "points": len(usable),
        "saturated": int(past.sum()),
        "max": float(bits.max()),
        "max_at": float(dataset[int(bits.argmax())]),
        "knee": float(dataset[past].min()) if past.any() else None,
    }
    if not past.any():
        largest = float(dataset.max())
        message = (
            f"no point past the knee: even the largest dataset ({largest:.4g} bits) holds "
            f"less than {KNEE:g} x what the model memorized of it"
        )
        return {**out, "capacity": None, "interval": None, "message": message}
    level = float(bits[past].mean())
    if past.sum() > 1:
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, int(past.sum()), size=(BOOTSTRAP, int(past.sum())))
        interval = [float(v) for v in np.percentile(bits[past][draws].mean(1), [2.5, 97.5])]
    else:
        only = [p for p, q in zip(usable, past, strict=True) if q][0]
        low, high = (_value(only, k) for k in ("bits_ci95_low", "bits_ci95_high"))
        interval = [low, high] if np.isfinite(low) and np.isfinite(high) else None
    P = float(np.mean([_value(p, "P") for p, q in zip(usable, past, strict=True) if q]))
    total = float(np.mean([_value(p, "P_total") for p, q in zip(usable, past, strict=True) if q]))
    out.update(capacity=level, interval=interval, P=P, P_total=total)
    for name, count in (("R", P), ("R_total", total)):
        out[name] = level / count
        out[f"{name}_interval"] = [v / count for v in interval] if interval else None
    return out


def capacities(df: Mapping[str, Sequence], seed: int = 0) -> list[dict]:
    """The plateau of every series of random-sequence runs (done, unquantized) of a sweep's
    results table (columns as lists): one per model and exposures, S, V."""
    size = len(df.get("status", []))
    rows = [{k: df[k][i] for k in df} for i in range(size)]
    rows = [
        r
        for r in rows
        if r.get("variant") == "random" and r.get("status") == "done" and r["quantize"] == "none"
    ]
    series: dict[tuple, list[dict]] = {}
    for r in rows:
        series.setdefault(tuple(r.get(k) for k in SERIES), []).append(r)
    out = []
    for key in sorted(series, key=lambda k: tuple(str(v) for v in k)):
        points = series[key]
        out.append({**dict(zip(SERIES, key, strict=True)), **capacity(points, seed)})
    return out


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def report_lines(fits: list[dict]) -> list[str]:
    """report.md's section on memorization capacity (nothing when no random runs)."""
    if not fits:
        return []
    lines = [
        "",
        "## Memorization capacity (random sequences; Morris et al. 2025)",
        "",
        "Capacity: mean memorized bits over the points past the knee (datasets larger than",
        f"any where the model memorized more than 1/{KNEE:g} of them), 95% bootstrap interval",
        "over those points; max: the largest over all points.",
        "",
        "| model | exposures | S | V | points (past knee) | capacity [95%] | bits/P [95%] "
        "| bits/P_total | max |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    notes = [f"- {f['model']}: {f['message']}" for f in fits if f.get("message")]
    for f in fits:
        span = f.get("interval")
        capacity_text = _number(f.get("capacity"))
        capacity_text += f" [{_number(span[0])}, {_number(span[1])}]" if span else ""
        ratio = _number(f.get("R"))
        r_span = f.get("R_interval")
        ratio += f" [{_number(r_span[0])}, {_number(r_span[1])}]" if r_span else ""
        lines.append(
            f"| {f['model']} | {f['exposures']} | {f['length']} | {f['symbols']} "
            f"| {f['points']} ({f.get('saturated', 0)}) | {capacity_text} | {ratio} "
            f"| {_number(f.get('R_total'))} | {_number(f.get('max'))} |"
        )
    return lines + ([""] + notes if notes else [])
