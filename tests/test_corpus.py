import json

import numpy as np
import pytest

from bioknow import cli
from bioknow.base.errors import InputError
from bioknow.data import corpus, dataset
from bioknow.data.stream import TrainStream


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "data"
    dataset.generate("bioS", 200, 2, path, sample=0)
    return dataset.open_dataset(path)


def stream_windows(ds, exposures, seed=0, window=512):
    stream = TrainStream(ds.table, exposures, 1, seed, ds.online, window)
    return [(b.tokens[0, : b.valid], b.labels[0, : b.valid]) for b in stream.batches()]


def test_bin_shards_are_the_stream(ds, tmp_path):
    header = corpus.write_corpus(ds, 5, tmp_path / "c", shard_windows=7)
    assert header["dtype"] == "uint16" and len(header["shards"]) > 2
    tokens, labels = corpus.read_bin(tmp_path / "c")
    windows = stream_windows(ds, 5)
    assert header["tokens"] == len(tokens) == sum(len(t) for t, _ in windows)
    assert header["windows"] == len(windows)
    for k, (t, lab) in enumerate(windows):
        assert np.array_equal(tokens[k * 512 : (k + 1) * 512], t)
        assert np.array_equal(labels[k * 512 : (k + 1) * 512], lab)
    assert not (tmp_path / "c" / ".partial.json").exists()


def test_parquet_shards_are_the_stream_in_the_transformers_layout(ds, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    header = corpus.write_corpus(ds, 3, tmp_path / "p", fmt="parquet", seed=5, shard_windows=4)
    rows = datasets.load_dataset(
        "parquet", data_files=str(tmp_path / "p" / "train-*.parquet"), cache_dir=str(tmp_path)
    )["train"]
    assert rows.column_names == ["input_ids", "attention_mask", "labels", "label_kinds", "text"]
    windows = stream_windows(ds, 3, seed=5)
    assert rows.num_rows == len(windows) and len(windows[-1][0]) < 512  # the last one padded
    for row, (t, kinds) in zip(rows, windows, strict=True):
        real = len(t)
        assert all(len(row[c]) == 512 for c in ("input_ids", "attention_mask", "labels"))
        assert row["input_ids"][:real] == t.tolist()
        assert row["attention_mask"] == [1] * real + [0] * (512 - real)
        # the targets transformers' causal LMs shift by one: the ids, -100 on padding
        assert row["labels"] == t.tolist() + [-100] * (512 - real)
        assert row["label_kinds"][:real] == kinds.tolist()
        assert set(row["input_ids"][real:]) <= {header["eot_id"]}
        assert ds.tokenizer.encode(row["text"], add_special_tokens=False).ids == t.tolist()
    assert header["label_kinds"][0] == "other" and "name" in header["label_kinds"]


def test_an_interrupted_corpus_resumes_to_the_same_bytes(ds, tmp_path, monkeypatch):
    corpus.write_corpus(ds, 4, tmp_path / "whole", shard_windows=5)
    real = corpus.atomic.write_bytes
    calls = []

    def dying(path, data):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(corpus.atomic, "write_bytes", dying)
    with pytest.raises(KeyboardInterrupt):
        corpus.write_corpus(ds, 4, tmp_path / "cut", shard_windows=5)
    monkeypatch.setattr(corpus.atomic, "write_bytes", real)
    assert not (tmp_path / "cut" / "corpus.json").exists()
    assert (tmp_path / "cut" / ".partial.json").exists()
    with pytest.raises(InputError, match="other parameters"):
        corpus.write_corpus(ds, 5, tmp_path / "cut", shard_windows=5)
    corpus.write_corpus(ds, 4, tmp_path / "cut", shard_windows=5)
    for f in (tmp_path / "whole").iterdir():
        assert (tmp_path / "cut" / f.name).read_bytes() == f.read_bytes()


def test_cli(ds, tmp_path, capsys):
    assert (
        cli.main(
            ["corpus", str(ds.path), "--exposures", "2", "--out", str(tmp_path / "c"), "--json"]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["exposures"] == 2
    assert cli.main(["corpus", str(ds.path), "--exposures", "2", "--out", str(tmp_path / "c")]) == 2
    assert cli.main(["corpus", str(ds.path), "--exposures", "0", "--out", str(tmp_path / "d")]) == 2
    assert (
        cli.main(
            ["corpus", str(tmp_path / "none"), "--exposures", "1", "--out", str(tmp_path / "e")]
        )
        == 2
    )
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()
