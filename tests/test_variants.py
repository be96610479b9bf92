"""bioD and bioR-style through generate, the dataset folder and the token table."""

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import tree_bytes

from bioknow import cli
from bioknow.data import dataset
from bioknow.data.render import bior
from bioknow.data.render.tokens import LABEL

BIOD = ["--k", "3", "--c", "2", "--d", "20", "--l", "2", "--t", "50"]


def generate(*args):
    return cli.main(["generate", *map(str, args)])


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("variants")
    assert generate("bioD", "--n", 150, *BIOD, "--out", root / "d", "--sample", 10) == 0
    for name in ("r", "r2"):
        assert generate("bioR-style", "--n", 60, "--renderings", 8, "--out", root / name) == 0
    return root


def test_biod_manifest(folders):
    m = dataset.read_manifest(folders / "d")
    assert m["biod"] == {"k": 3, "c": 2, "d": 20, "l": 2, "t": 50}
    bits = m["knowledge_bits"]
    assert bits["value"] == pytest.approx(150 * 3 * 2 * np.log2(20))
    assert bits["diversity"] == pytest.approx(3 * 20 * (2 * np.log2(50) - np.log2(20)))
    assert m["tokenizer"]["vocab_size"] % 64 == 0 and m["renderings"]["stored"] == 10
    ds = dataset.open_dataset(folders / "d")
    assert ds.online and ds.table.params.k == 3


def test_bior_is_byte_identical_and_uses_each_rendering_equally(folders):
    assert tree_bytes(folders / "r") == tree_bytes(folders / "r2")
    m = dataset.read_manifest(folders / "r")
    assert m["renderings_per_person"] == 8
    diversity = m["diversity"]
    assert diversity["renderings"] == 480 and diversity["distinct_texts"] == 480
    assert diversity["distinct_sentence_skeletons"] > 200 and 60 <= diversity["mean_words"] <= 120
    table = dataset.open_dataset(folders / "r").table
    used = np.stack([table.index(np.arange(60), e) for e in range(8)])
    assert all(sorted(used[:, p]) == list(range(8 * p, 8 * p + 8)) for p in range(60))


def test_bior_units_are_the_tokenized_renderings(folders):
    ds = dataset.open_dataset(folders / "r")
    units = ds.table.assemble(np.arange(60), 3)
    for person in range(60):
        k = int(ds.table.index([person], 3)[0]) % 8
        text = bior.render(ds.population, person, k)
        ids, labels = units.unit(person)
        assert ids[0] == ds.table.eot
        assert ids[1:].tolist() == ds.tokenizer.encode(text.text, add_special_tokens=False).ids
        name = ds.tokenizer.encode(ds.population.full_name(person), add_special_tokens=False).ids
        assert ids[labels == LABEL["name"]].tolist() == name
    assert np.array_equal(ds.table.lengths(np.arange(60), 3), np.diff(units.offsets))


@pytest.mark.parametrize(
    "args",
    [
        ["bioD", "--n", 10, "--k", 2],
        ["bioD", "--n", 10, "--k", 1, "--c", 1, "--d", 9, "--l", 3, "--t", 2],  # D > T^L
        ["bioS", "--n", 10, "--k", 2, "--c", 1, "--d", 2, "--l", 1, "--t", 2],
        ["bioR-style", "--n", 10, "--renderings", 41],
        ["bioS", "--n", 10, "--rewriter", "nowhere"],
        ["bioR-style", "--n", 3, "--rewriter", "nowhere"],
    ],
)
def test_bad_variant_input(tmp_path, args):
    assert generate(*args, "--out", tmp_path / "o") == 2
    assert not (tmp_path / "o").exists()


def test_bior_counts_its_stored_renderings_as_rows(folders, capsys):
    """60 people x 8 renderings: the manifest, `info` and the dataset card count the 480
    rows the parquet holds, of 60 people."""
    rows = pq.read_table(folders / "r" / "renderings").num_rows
    m = dataset.read_manifest(folders / "r")
    assert rows == 480 and (m["renderings"]["stored"], m["renderings"]["people"]) == (480, 60)
    assert cli.main(["info", str(folders / "r")]) == 0
    assert "480 stored (60 people)" in capsys.readouterr().out
    assert "480 stored (60 people)" in (folders / "r" / "README.md").read_text()
