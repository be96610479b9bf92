"""Memorized bits of random sequences, after Morris et al. 2025 ("How much do language
models memorize?", arXiv 2505.24832, Sec. 3).

Morris et al. define the memorization of a sample x by a model as the bits the model
saves in describing x: H^K(x) - H^K(x | model), Kolmogorov complexities that they
estimate by code lengths, H^K(x | model) by -log2 p(x | model) (arithmetic coding with the
model). For uniformly random data nothing generalizes, and H^K(x) is the uniform code,
S log2 V bits for S symbols over V. So, per sequence, from the per-token losses that
`bioknow.measure.evaluate.score` sums (nats; every one of the S symbols, the first predicted from
the end-of-text token alone):

    mem(x) = S log2 V - loss(x) / ln 2

and the model's memorized bits are the sum over the N sequences (estimated as N times the
mean over a seeded sample, with a bootstrap 95% interval, when `--people K` asks for one).
mem(x) can be negative: a model that codes x worse than uniformly. A coder can always fall
back to the uniform code (one flag bit), which is why a per-sample Kolmogorov estimate is
read as max(0, mem(x)); bioknow reports both sums, `bits` (unclamped: an unbiased
estimate, what the capacity plateau is read from) and `bits_clamped` (each sequence
clamped at 0, biased up by the noise of sequences the model does not know).

Bits per parameter are given against P counted as Part 3.3 counts it (`R`: embedding rows
of the token ids in use) and against every parameter (`R_total`, as Morris et al. count a
model's size). `exact` is the share of sequences that greedy decoding reproduces exactly
from a prompt of their first k = ceil(log_V N) symbols (the fewest that tell N sequences
apart on average; from the end-of-text token alone greedy decoding can produce only one
sequence): every next-token argmax after the prompt is the sequence's symbol (one
teacher-forced pass decides it, as for the values of the other variants). The memorized
bits count every one of the S symbols, the prompt's included.
"""

import math

import numpy as np

from bioknow.data.render.sequences import RandomParams

LN2 = math.log(2)
BOOTSTRAP = 1000  # resamples of the evaluated sequences for the 95% intervals


def sequence_bits(loss_nats: np.ndarray, length: int, symbols: int) -> np.ndarray:
    """Memorized bits of each sequence: S log2 V minus its code length (loss / ln 2)."""
    return length * math.log2(symbols) - np.asarray(loss_nats, dtype=np.float64) / LN2


def shape_prompt(shape: dict, n: int) -> int:
    """The prompt length of greedy decoding: ceil(log_V N) symbols, in [1, S - 1]."""
    return RandomParams(shape["length"], shape["symbols"]).prompt(n)


def _intervals(columns: dict[str, np.ndarray], seed: int) -> dict[str, list[float]]:
    """95% bootstrap intervals of the mean of each column, over the same resamples."""
    size = len(next(iter(columns.values())))
    draws = np.random.default_rng(seed).integers(0, size, size=(BOOTSTRAP, size))
    out = {}
    for name, values in columns.items():
        low, high = np.percentile(values[draws].mean(axis=1), [2.5, 97.5])
        out[name] = [float(low), float(high)]
    return out


def report(
    loss_nats: np.ndarray, exact: np.ndarray, n: int, shape: dict, params: dict, seed: int = 0
) -> dict:
    """The memorization report of N random sequences (`shape`: length S, symbols V) from
    the evaluated sequences' loss sums (nats) and exact greedy reproduction; `params`:
    P, total and non_embedding. A sample of fewer than N adds bootstrap 95% intervals."""
    length, symbols = shape["length"], shape["symbols"]
    bits = sequence_bits(loss_nats, length, symbols)
    exact = np.asarray(exact, dtype=bool)
    per_bits = {"bits": bits, "bits_clamped": np.maximum(bits, 0.0)}
    totals = {k: n * float(v.mean()) for k, v in per_bits.items()}
    bits_max = n * length * math.log2(symbols)
    P, total = params["P"], params["total"]
    out = {
        "N": n,
        "people": len(bits),
        "P": P,
        "P_total": total,
        "P_nonembedding": params["non_embedding"],
        "length": length,
        "symbols": symbols,
        "prompt": shape_prompt(shape, n),
        "loss": float(np.mean(loss_nats)),
        "loss_per_token": float(np.mean(loss_nats)) / length,
        "bits": totals["bits"],
        "bits_clamped": totals["bits_clamped"],
        "bits_max": bits_max,
        "R": totals["bits"] / P,
        "R_clamped": totals["bits_clamped"] / P,
        "R_max": bits_max / P,
        "R_total": totals["bits"] / total,
        "R_clamped_total": totals["bits_clamped"] / total,
        "R_max_total": bits_max / total,
        "bits_per_sequence": totals["bits"] / n,
        "negative_sequences": float((bits < 0).mean()),
        "exact": float(exact.mean()),
        "attributes": {
            "sequences": {
                "bits": totals["bits"],
                "bits_clamped": totals["bits_clamped"],
                "loss": float(np.mean(loss_nats)),
                "accuracy": float(exact.mean()),
            }
        },
    }
    if len(bits) < n:
        spans = _intervals({**per_bits, "exact": exact.astype(np.float64)}, seed)
        for name in per_bits:
            low, high = (n * v for v in spans[name])
            out[f"{name}_ci95"] = [low, high]
            suffix = "_clamped" if name == "bits_clamped" else ""
            out[f"R{suffix}_ci95"] = [low / P, high / P]
        out["exact_ci95"] = spans["exact"]
    return out
