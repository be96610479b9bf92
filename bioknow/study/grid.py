"""The size of a sweep config's grid, counted without expanding it (docs/design.md §11).

A grid is the product of its lists: the datasets (each entry a product of its own
lists), models, exposures, seeds and the recipe's lists. A config whose lists multiply
to more points than `MAX_POINTS` is refused up front, with the count, before anything
is expanded or checked point by point; `--max-points` raises the limit.
"""

import math

from bioknow.base.errors import InputError

MAX_POINTS = 10_000


def _size(value) -> int:
    return len(value) if isinstance(value, list) else 1


def _product(spec) -> int:
    """The combinations a mapping of lists expands to (1 for anything else: its checks
    come later)."""
    return math.prod(_size(v) for v in spec.values()) if isinstance(spec, dict) else 1


def count_points(config: dict) -> int:
    """The points a config's grid expands to."""
    datasets = config.get("datasets")
    specs = datasets if isinstance(datasets, list) else [datasets]
    data = sum(_product(spec) for spec in specs)
    lists = (config.get(key) for key in ("models", "exposures", "seeds"))
    return data * math.prod(_size(v) for v in lists) * _product(config.get("recipe") or {})


def check_size(config: dict, limit: int | None) -> int:
    """The grid's count of points; more than `limit` (default MAX_POINTS) is refused."""
    limit = MAX_POINTS if limit is None else limit
    points = count_points(config)
    if points > limit:
        raise InputError(
            f"sweep config: its grid has {points:,} points, more than the limit of {limit:,} "
            "(raise it with --max-points N)"
        )
    return points
