import pytest

from bioknow.training import recipe


@pytest.mark.parametrize(
    "n, exposures, expected",
    [
        (10_000, 1000, (1e-3, 0.02, 24)),
        (20_000, 1000, (1e-3, 0.02, 48)),
        (1_000_000, 100, (5e-4, 0.01, 192)),
        (2_000_000, 100, (3e-4, 0.01, 384)),  # the lower end of the paper's range
        (12_000, 900, (1e-3, 0.02, 24)),  # nearest row
        (100, 100, (1e-3, 0.01, 1)),  # below the table: the nearest row, batch shrunk
        (5_000, 1000, (1e-3, 0.02, 12)),  # half the row's N x exposures: half its batch
        (900, 1000, (1e-3, 0.02, 2)),
        (200, 40, (1e-3, 0.01, 1)),
        (20_000_000, 100, (2e-4, 0.002, 1536)),
    ],
)
def test_nearest_row(n, exposures, expected):
    r = recipe.default(n, exposures)
    assert (r.lr, r.wd, r.batch) == expected


def test_a_shrunk_batch_keeps_the_rows_steps():
    """Steps ~ N x exposures / batch: a run below its row keeps about the row's steps."""
    row = 10_000 * 1000 / 24
    for n in (2_000, 3_000, 5_000, 7_000):
        r = recipe.default(n, 1000)
        assert "shrunk" in recipe.describe(r, []) and "Remark A.2" in r.shrunk
        assert "shrunk" not in recipe.describe(r, ["batch"])
        assert n * 1000 / r.batch == pytest.approx(row, rel=0.25)
    assert not recipe.default(10_000, 1000).shrunk


def test_short_runs_are_warned():
    assert recipe.short_run_warning(5000, 8) is None
    assert "only 92 steps" in recipe.short_run_warning(92, 8)
    assert "--batch" in recipe.short_run_warning(92, 8)
    assert "--batch" not in recipe.short_run_warning(92, 1)


def test_warmup():
    assert recipe.warmup_steps(50_000, None)[0] == 1000
    steps, note = recipe.warmup_steps(300, None)
    assert steps == 30 and "shortened" in note
    assert recipe.warmup_steps(300, 7) == (7, "as given")


def test_schedule():
    steps, peak, warm = 1000, 1e-3, 100
    lrs = [recipe.lr_at(s, steps, peak, warm) for s in range(steps)]
    assert lrs[0] == pytest.approx(peak / warm)
    assert lrs[warm - 1] == pytest.approx(peak)
    assert max(lrs) == pytest.approx(peak)
    decay = lrs[warm:]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))  # monotone decay
    assert recipe.lr_at(steps, steps, peak, warm) == pytest.approx(0.1 * peak)
    assert lrs[-1] > 0.1 * peak
