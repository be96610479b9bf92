"""Counter-based random numbers: every draw is a pure function of its integer key.

A key such as (seed, stream, person, exposure) picks a value without any state, so a
person of a population too large to store, or any exposure of any person, is computable
on its own, in any order, for many keys at once (docs/design.md §9.1).
"""

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: a bijection of uint64 with good avalanche."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def hash64(*key) -> np.ndarray:
    """Hash a key of non-negative integers (scalars or arrays, broadcast) to uint64."""
    with np.errstate(over="ignore"):
        h = np.asarray(_GOLDEN)
        for part in key:
            h = _mix((h ^ np.asarray(part).astype(np.uint64)) * _GOLDEN + _GOLDEN)
    return h


def _below(h: np.ndarray, k: int) -> np.ndarray:
    """Map uniform uint64 values to uniform integers in [0, k) (53-bit resolution)."""
    unit = (h >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)
    return np.floor(unit * k).astype(np.int64)


def uniform_int(k: int, *key) -> np.ndarray:
    """A uniform integer in [0, k) for each key, as int64."""
    return _below(hash64(*key), k)


def uniform_ints(ks, *key) -> np.ndarray:
    """Independent uniform integers in [0, k) for each k of `ks`, for each key: shape
    key.shape + (len(ks),). One keyed hash, then one mix per draw."""
    base = hash64(*key)
    out = np.empty(base.shape + (len(ks),), dtype=np.int64)
    with np.errstate(over="ignore"):
        for j, k in enumerate(ks):
            out[..., j] = _below(_mix(base ^ (np.uint64(j + 1) * _GOLDEN)), k)
    return out


def permute(index: np.ndarray, domain: int, *key, rounds: int = 6) -> np.ndarray:
    """A pseudo-random bijection of [0, domain), keyed: a balanced Feistel network on
    the next even power of two, with cycle walking back into the domain."""
    half = max(1, (int(domain - 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    shift = np.uint64(half)

    def feistel(x: np.ndarray) -> np.ndarray:
        left, right = x >> shift, x & mask
        for r in range(rounds):
            left, right = right, left ^ (hash64(*key, r, right) & mask)
        return (left << shift) | right

    index = np.asarray(index)
    if index.size and (index.min() < 0 or index.max() >= domain):
        raise ValueError(f"index outside [0, {domain})")
    x = index.astype(np.uint64)
    y = feistel(x)
    outside = np.flatnonzero(y >= domain)
    while outside.size:
        y[outside] = feistel(y[outside])
        outside = outside[y[outside] >= domain]
    return y.astype(np.int64)
