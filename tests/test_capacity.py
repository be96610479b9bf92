import math

import pytest

from bioknow.base import capacity

N0 = 400 * 400 * 1000
LOG2_S0 = math.log2(2 * 12 * 28 * 200 * 200 * 300 * 100 * 263)


def test_bios_max_bits_hand_computed():
    # N = 1e5: 1e5 * log2(1600) + 1e5 * 47.5916 = 1.06439e6 + 4.75916e6 = 5.824e6
    bits = capacity.bios_max_bits(100_000, N0, LOG2_S0)
    assert bits["name"] == pytest.approx(1e5 * 10.643856, rel=1e-7)
    assert bits["total"] == pytest.approx(5.824e6, rel=2e-4)


def test_perfect_bios_model_reaches_rmax():
    n, p = 10_000, 1_000_000
    r = capacity.bios(n, N0, LOG2_S0, p1=math.log(n), p2=0.0, params=p)
    assert r["R"] == pytest.approx(r["R_max"], rel=1e-12) and r["bits"] == r["bits_clamped"]
    assert r["R_max"] == pytest.approx((n * math.log2(N0 / n) + n * LOG2_S0) / p)


def test_clamping_each_term():
    # a model that knows the names perfectly but is worse than uniform on values
    n = 100
    r = capacity.bios(n, N0, LOG2_S0, p1=math.log(n), p2=40.0, params=1000)
    assert r["terms"]["value"] == pytest.approx(n * (LOG2_S0 - 40 / math.log(2)))
    assert r["terms"]["value"] < 0 and r["terms_clamped"]["value"] == 0
    assert r["bits_clamped"] == pytest.approx(n * math.log2(N0 / n))
    assert r["bits"] < r["bits_clamped"]


def test_biod_hand_computed():
    # N=1000, K=2, C=3, D=16, L=2, T=8: name 1000 log2(160000), value 1000*2*3*4,
    # diversity 2*16*(2*3 - 4) = 64
    bits = capacity.biod_max_bits(1000, N0, 2, 3, 16, 2, 8)
    assert bits["value"] == 24_000 and bits["diversity"] == 64
    assert bits["name"] == pytest.approx(1000 * math.log2(160_000))
    perfect = capacity.biod(
        1000, N0, 2, 3, 16, 2, 8, p1=math.log(1000), p2=0.0, p3=math.log(16 / 16), params=500
    )
    # p3 = 0: the first chunk is certain given the diversity set is known
    assert perfect["R"] == pytest.approx(perfect["R_max"])
    blind = capacity.biod(
        1000,
        N0,
        2,
        3,
        16,
        2,
        8,
        p1=math.log(1000),
        p2=3 * math.log(16),
        p3=math.log(16),
        params=500,
    )
    assert blind["terms"]["value"] == pytest.approx(0, abs=1e-9)
    assert blind["terms"]["diversity"] == pytest.approx(2 * 16 * (6 - 4 - 4))
