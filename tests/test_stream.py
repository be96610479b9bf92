import numpy as np
import pytest

from bioknow.data import dataset
from bioknow.data.render.tokens import LABELS
from bioknow.data.stream import EVAL_EXPOSURE, Position, TrainStream, eval_batches, sample_people

NAME = LABELS.index("name")


@pytest.fixture(scope="module")
def datasets_(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    for variant in ("bioS", "bioS-simple"):
        dataset.generate(variant, 300, 4, root / variant, sample=0)
    return {v: dataset.open_dataset(root / v) for v in ("bioS", "bioS-simple")}


def stream_of(ds, exposures=6, batch=3, seed=1, window=512):
    return TrainStream(ds.table, exposures, batch, seed, ds.online, window)


def all_tokens(stream, start_step=0):
    batches = list(stream.batches(start_step))
    tokens = np.concatenate([b.tokens.ravel()[: b.valid] for b in batches])
    labels = np.concatenate([b.labels.ravel()[: b.valid] for b in batches])
    return batches, tokens, labels


def units_of(tokens, labels, eot):
    """Split a token stream into units at the end-of-text tokens."""
    starts = np.flatnonzero(tokens == eot)
    return [
        (tokens[a:b], labels[a:b]) for a, b in zip(starts, [*starts[1:], len(tokens)], strict=True)
    ]


@pytest.mark.parametrize("variant", ["bioS", "bioS-simple"])
def test_every_person_exactly_E_times(datasets_, variant):
    ds = datasets_[variant]
    stream = stream_of(ds, exposures=6)
    batches, tokens, labels = all_tokens(stream)
    assert len(batches) == stream.steps == -(-stream.total_tokens // (3 * 512))
    assert len(tokens) == stream.total_tokens
    names = {}
    for person in range(300):
        ids, lab = ds.table.assemble([person], 0).unit(0)
        names[tuple(ids[lab == NAME])] = person
    units = units_of(tokens, labels, ds.table.eot)
    assert len(units) == 6 * 300
    people = [names[tuple(ids[lab == NAME])] for ids, lab in units]
    counts = np.bincount(people, minlength=300)
    assert (counts == 6).all()
    rounds = np.array(people).reshape(6, 300)
    assert all(sorted(r) == list(range(300)) for r in rounds)  # each round: everyone once
    assert len({tuple(r) for r in rounds}) == 6  # a fresh order per round
    texts = {}
    for (ids, _), person in zip(units, people, strict=True):
        texts.setdefault(person, set()).add(tuple(ids))
    distinct = np.mean([len(v) for v in texts.values()])
    assert distinct == 1 if variant == "bioS-simple" else distinct > 5


def test_padding_and_shapes(datasets_):
    stream = stream_of(datasets_["bioS"], exposures=2, batch=4, window=64)
    batches = list(stream.batches())
    assert all(b.tokens.shape == (4, 64) and b.tokens.dtype == np.int32 for b in batches)
    assert all(b.valid == 4 * 64 for b in batches[:-1])
    last = batches[-1]
    assert (last.tokens.ravel()[last.valid :] == stream.table.eot).all()
    assert last.end == Position(2, 0)


@pytest.mark.parametrize("variant", ["bioS", "bioS-simple"])
def test_resume_gives_the_same_batches(datasets_, variant):
    stream = stream_of(datasets_[variant], exposures=4, batch=2)
    whole = list(stream.batches())
    for k in (1, len(whole) // 2, len(whole) - 1):
        again = list(stream_of(datasets_[variant], exposures=4, batch=2).batches(k))
        saved = list(stream.batches(k, start=whole[k - 1].end))
        for a, b, c in zip(whole[k:], again, saved, strict=True):
            assert a.step == b.step == c.step
            assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.tokens, c.tokens)
            assert np.array_equal(a.labels, b.labels) and a.valid == b.valid == c.valid
        assert stream.position_at(k) == whole[k - 1].end


def test_seed_changes_the_order_only(datasets_):
    ds = datasets_["bioS-simple"]
    _, a, _ = all_tokens(stream_of(ds, seed=1))
    _, b, _ = all_tokens(stream_of(ds, seed=1))
    _, c, _ = all_tokens(stream_of(ds, seed=2))
    assert np.array_equal(a, b) and len(a) == len(c) and not np.array_equal(a, c)
    assert np.array_equal(np.sort(a), np.sort(c))


def test_eval_batches(datasets_):
    ds = datasets_["bioS"]
    people = np.arange(0, 300, 7)
    rows = list(eval_batches(ds.table, people, 16, EVAL_EXPOSURE))
    assert np.array_equal(np.concatenate([r.people for r in rows]), people)
    for r in rows:
        units = ds.table.assemble(r.people, EVAL_EXPOSURE)
        for i in range(len(r.people)):
            ids, labels = units.unit(i)
            n = r.lengths[i]
            assert r.tokens[i, 0] == ds.table.eot and n == len(ids)
            assert np.array_equal(r.tokens[i, :n], ids) and np.array_equal(r.labels[i, :n], labels)
            assert (r.tokens[i, n:] == ds.table.eot).all() and (r.labels[i, n:] == 0).all()


def test_sample_people():
    a = sample_people(1000, 50, 3)
    assert len(set(a.tolist())) == 50 and np.array_equal(a, np.sort(a))
    assert np.array_equal(a, sample_people(1000, 50, 3))
    assert not np.array_equal(a, sample_people(1000, 50, 4))
    assert np.array_equal(sample_people(10, None, 0), np.arange(10))


def test_chunk_size_does_not_change_the_stream(datasets_):
    ds = datasets_["bioS"]
    whole = list(stream_of(ds, exposures=3, batch=2).batches())
    small = stream_of(ds, exposures=3, batch=2)
    small.chunk = 7  # as for long bioD units
    for a, b in zip(whole, small.batches(), strict=True):
        assert np.array_equal(a.tokens, b.tokens) and a.end == b.end
