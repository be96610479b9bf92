"""Knowledge bits and capacity ratios: the formulas of SPEC section 5, nothing else."""

import math


def bios_max_bits(n: int, n0: int, log2_s0: float) -> dict[str, float]:
    """The bits a perfect model of bioS(N) stores (the numerator of Rmax, Def. 4.3):
    N log2(N0 / N) for the names plus N log2 S0 for the values."""
    name = n * math.log2(n0 / n)
    value = n * log2_s0
    return {"name": name, "value": value, "total": name + value}
