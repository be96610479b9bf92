"""Knowledge bits and capacity ratios: the formulas of docs/design.md §7, nothing else.

Losses p1, p2, p3 are per-person (bioD: per person and attribute) sums of per-token
cross-entropy in nats. A term log2(x / e^p) is computed as log2 x - p / ln 2. Each term
is reported raw (it can be negative for an untrained model) and clamped at 0.
"""

import math

LN2 = math.log(2)


def _terms(terms: dict[str, float], params: int) -> dict:
    raw = sum(terms.values())
    clamped = {k: max(0.0, v) for k, v in terms.items()}
    return {
        "terms": terms,
        "bits": raw,
        "R": raw / params,
        "terms_clamped": clamped,
        "bits_clamped": sum(clamped.values()),
        "R_clamped": sum(clamped.values()) / params,
    }


def bios_max_bits(n: int, n0: int, log2_s0: float) -> dict[str, float]:
    """The bits a perfect model of bioS(N) stores (the numerator of Rmax, Def. 4.3):
    N log2(N0 / N) for the names plus N log2 S0 for the values."""
    name = n * math.log2(n0 / n)
    value = n * log2_s0
    return {"name": name, "value": value, "total": name + value}


def bios(n: int, n0: int, log2_s0: float, p1: float, p2: float, params: int) -> dict:
    """R(F) of bioS (Def. 4.3): [N log2(N0 / e^p1) + N log2(S0 / e^p2)] / P, and Rmax."""
    result = _terms(
        {"name": n * (math.log2(n0) - p1 / LN2), "value": n * (log2_s0 - p2 / LN2)}, params
    )
    result["bits_max"] = bios_max_bits(n, n0, log2_s0)["total"]
    result["R_max"] = result["bits_max"] / params
    return result


def biod_max_bits(n: int, n0: int, K: int, C: int, D: int, L: int, T: int) -> dict[str, float]:
    """The numerator of Rmax for bioD (Def. 4.1): N log2(N0/N) + N K C log2 D +
    K D log2(T^L / D)."""
    name = n * math.log2(n0 / n)
    value = n * K * C * math.log2(D)
    diversity = K * D * (L * math.log2(T) - math.log2(D))
    return {"name": name, "value": value, "diversity": diversity, "total": name + value + diversity}


def biod(
    n: int,
    n0: int,
    K: int,
    C: int,
    D: int,
    L: int,
    T: int,
    p1: float,
    p2: float,
    p3: float,
    params: int,
) -> dict:
    """R(F) of bioD (Def. 4.1): [N log2(N0/e^p1) + N K log2(D^C/e^p2)
    + K D log2(T^L/(D e^p3))] / P, and Rmax."""
    terms = {
        "name": n * (math.log2(n0) - p1 / LN2),
        "value": n * K * (C * math.log2(D) - p2 / LN2),
        "diversity": K * D * (L * math.log2(T) - math.log2(D) - p3 / LN2),
    }
    result = _terms(terms, params)
    result["bits_max"] = biod_max_bits(n, n0, K, C, D, L, T)["total"]
    result["R_max"] = result["bits_max"] / params
    return result
