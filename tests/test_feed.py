"""The batches a step takes, made ahead of it by a background thread."""

import threading

import numpy as np
import pytest
import torch

from bioknow.data import dataset
from bioknow.data.stream import TrainStream
from bioknow.training.feed import IGNORE, Prefetcher, prepare, targets_of


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    out = tmp_path_factory.mktemp("feed") / "d"
    dataset.generate("bioS", 40, 0, out, sample=0)
    ds = dataset.open_dataset(out)
    return TrainStream(ds.table, 3, 4, 0, ds.online)


def test_the_feed_gives_the_streams_batches_in_order(stream):
    rows = slice(1, 3)  # rank 1 of 2 with a batch of 4
    with Prefetcher(stream.batches(), rows, "cpu") as feed:
        got = list(feed)
    expected = list(stream.batches())
    assert [r.batch.step for r in got] == list(range(stream.steps))
    for ready, batch in zip(got, expected, strict=True):
        targets = targets_of(batch.tokens, batch.lengths)
        assert torch.equal(ready.x, torch.from_numpy(batch.tokens[rows].astype(np.int64)))
        assert torch.equal(ready.y, torch.from_numpy(targets[rows]))
        assert ready.total == int((targets != IGNORE).sum())
        assert ready.mine == int((targets[rows] != IGNORE).sum())
        assert ready.batch.end == batch.end


def test_leaving_early_stops_the_thread(stream):
    before = threading.active_count()
    with Prefetcher(stream.batches(), slice(0, 4), "cpu", depth=1) as feed:
        next(iter(feed))
    assert threading.active_count() == before


def test_an_error_in_the_stream_reaches_the_step(stream):
    def broken():
        yield from stream.batches(0)
        raise RuntimeError("the stream broke")

    with pytest.raises(RuntimeError, match="the stream broke"):
        with Prefetcher(broken(), slice(0, 4), "cpu") as feed:
            list(feed)


def test_prepare_counts_targets_of_a_short_last_window(stream):
    last = list(stream.batches())[-1]
    x, y, mine, total = prepare(last, slice(0, 4))
    assert x.dtype == np.int64 and y.shape == x.shape
    assert (last.lengths == 0).any()  # the last batch has empty rows
    assert total == int((last.lengths - 1).clip(min=0).sum())
    assert mine == total
