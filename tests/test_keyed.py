import numpy as np
import pytest

from bioknow.data import keyed


@pytest.mark.parametrize("domain", [1, 2, 7, 1000, 1024, 12345])
def test_permute_is_a_bijection(domain):
    image = keyed.permute(np.arange(domain), domain, 3, 1)
    assert sorted(image.tolist()) == list(range(domain))


def test_permute_depends_on_key():
    a = keyed.permute(np.arange(1000), 10**6, 1, 1)
    b = keyed.permute(np.arange(1000), 10**6, 2, 1)
    assert (a != b).mean() > 0.99


def test_permute_rejects_outside_domain():
    with pytest.raises(ValueError):
        keyed.permute(np.array([10]), 10, 0)


def test_uniform_int_is_pure_and_uniform():
    draws = keyed.uniform_int(6, 42, 7, np.arange(60_000))
    assert np.array_equal(draws, keyed.uniform_int(6, 42, 7, np.arange(60_000)))
    assert draws.min() == 0 and draws.max() == 5
    counts = np.bincount(draws)
    chi2 = ((counts - 10_000) ** 2 / 10_000).sum()
    assert chi2 < 20.5  # chi-square, 5 degrees of freedom, p = 0.001


def test_one_key_computes_alone():
    """A draw for person i does not depend on which other people are drawn with it."""
    together = keyed.uniform_int(1000, 5, 1, np.arange(100))
    alone = [int(keyed.uniform_int(1000, 5, 1, np.array([i]))[0]) for i in (0, 57, 99)]
    assert alone == [together[0], together[57], together[99]]


def test_uniform_ints_are_independent_and_uniform():
    draws = keyed.uniform_ints([6, 10], 1, 2, np.arange(60_000))
    assert draws.shape == (60_000, 2)
    table = np.zeros((6, 10))
    np.add.at(table, (draws[:, 0], draws[:, 1]), 1)
    expected = 60_000 / 60
    chi2 = ((table - expected) ** 2 / expected).sum()
    assert chi2 < 59 + 5 * np.sqrt(2 * 59)  # joint uniformity implies independence
