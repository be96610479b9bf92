import numpy as np
import pytest

from bioknow.base.errors import InputError
from bioknow.data.fields import KNOWLEDGE
from bioknow.data.population import Population, person_codes


def test_pure_function_of_seed(default_fields):
    a = Population.build(default_fields, 7, 5000)
    b = Population.build(default_fields, 7, 5000)
    c = Population.build(default_fields, 8, 5000)
    for k in a.codes:
        assert a.codes[k].tobytes() == b.codes[k].tobytes()
    assert (a.codes["name"] != c.codes["name"]).mean() > 0.99


def test_names_are_distinct(default_fields):
    pop = Population.build(default_fields, 0, 200_000)
    assert len(np.unique(pop.codes["name"])) == 200_000
    assert len({pop.full_name(i) for i in range(0, 200_000, 7)}) == len(range(0, 200_000, 7))


def test_a_person_computes_alone(default_fields):
    pop = Population.build(default_fields, 3, 3000)
    alone = person_codes(default_fields, 3, np.array([2999, 17]))
    for k, v in alone.items():
        assert v.tolist() == [pop.codes[k][2999], pop.codes[k][17]]


def test_attributes_are_uniform(default_fields):
    """Chi-square of each attribute's frequencies (and of each name part) against uniform."""
    n = 300_000
    pop = Population.build(default_fields, 11, n)
    name = pop.codes["name"].astype(np.int64)
    columns = {a: pop.codes[a].astype(np.int64) for a in KNOWLEDGE}
    columns["birth_month"] = columns["birth_date"] // (28 * 200)
    columns["birth_year"] = columns["birth_date"] % 200
    columns["first_name"] = name // 400_000
    columns["last_name"] = name % 1000
    sizes = {a: default_fields.cardinality(a) for a in KNOWLEDGE}
    sizes.update(birth_month=12, birth_year=200, first_name=400, last_name=1000)
    for column, k in sizes.items():
        if k > 5000:
            continue  # too few draws per cell for a chi-square test
        counts = np.bincount(columns[column], minlength=k)
        assert len(counts) == k
        expected = n / k
        chi2 = ((counts - expected) ** 2 / expected).sum()
        dof = k - 1
        # a generous bound: mean + 5 standard deviations of the chi-square distribution
        assert chi2 < dof + 5 * np.sqrt(2 * dof), (column, chi2, dof)


def test_attributes_are_independent(default_fields):
    """Contingency chi-square of gender against major."""
    n = 200_000
    pop = Population.build(default_fields, 5, n)
    table = np.zeros((2, 100))
    np.add.at(table, (pop.codes["gender"], pop.codes["major"]), 1)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / n
    chi2 = ((table - expected) ** 2 / expected).sum()
    assert chi2 < 99 + 5 * np.sqrt(2 * 99)


@pytest.mark.parametrize("n", [0, -5, 160_000_001, 2.5])
def test_bad_sizes(default_fields, n):
    with pytest.raises(InputError):
        Population.build(default_fields, 0, n)
