import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import tree_bytes

from bioknow import cli
from bioknow.data import dataset


def generate(*args):
    return cli.main(["generate", *map(str, args)])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("built")
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        assert generate("bioS-simple", "--n", 1500, "--seed", seed, "--out", root / name) == 0
    assert generate("bioS", "--n", 2e3, "--sample", 300, "--out", root / "online") == 0
    return root


def test_same_seed_byte_identical_other_seed_differs(built):
    a, b, c = (tree_bytes(built / x) for x in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert a["population.parquet"] != c["population.parquet"]
    assert (
        a["renderings/train-00000-of-00001.parquet"] != c["renderings/train-00000-of-00001.parquet"]
    )


def test_manifest(built, default_fields):
    m = json.loads((built / "a" / "manifest.json").read_text())
    assert (m["variant"], m["n"], m["seed"], m["n0"]) == ("bioS-simple", 1500, 5, 160_000_000)
    assert round(m["log2_s0"], 2) == 47.59
    import math

    assert m["knowledge_bits"]["total"] == pytest.approx(
        1500 * math.log2(1.6e8 / 1500) + 1500 * default_fields.log2_s0
    )
    assert m["renderings"]["stored"] == 1500
    files = {p for p in m["files"]}
    assert {"population.parquet", "README.md", "fields/majors.txt"} <= files
    assert dataset.verify(built / "a", m) == []


def test_bioS_stores_a_sample(built):
    m = dataset.read_manifest(built / "online")
    assert (m["variant"], m["renderings"]["stored"]) == ("bioS", 300)


def test_loads_with_datasets(built, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    rows = datasets.load_dataset(str(built / "a"), cache_dir=str(tmp_path))["train"]
    assert rows.num_rows == 1500
    people = datasets.load_dataset(str(built / "a"), "population", cache_dir=str(tmp_path))
    first = people["train"][0]
    assert rows[0]["text"].startswith(first["name"] + " ")
    for span in rows[0]["spans"]:
        if span["label"] not in ("name", "gender"):
            assert rows[0]["text"][span["start"] : span["end"]] == first[span["label"]]


def test_info(built, capsys):
    assert cli.main(["info", str(built / "a"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 1500 and report["variant"] == "bioS-simple"
    assert cli.main(["info", str(built / "a"), "--verify"]) == 0
    assert "knowledge" in capsys.readouterr().out


def test_info_verify_catches_corruption(built, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built / "a", copy)
    (copy / "fields" / "majors.txt").write_text("tampered\n")
    assert cli.main(["info", str(copy), "--verify"]) == 2
    assert "fields/majors.txt" in capsys.readouterr().err


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "bioknow", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n", "0"], "--n must be a whole number in [1, 160,000,000], got '0'"),
        (["--n", "-3"], "got '-3'"),
        (["--n", "1.6e8+1"], "not a number"),
        (["--n", "160000001"], "got '160000001'"),
        (["--n", "abc"], "not a number"),
        (["--n", "2.5"], "not a whole number"),
        (["--n", "10", "--fields", "nowhere"], "fields folder not found"),
        (["--n", "10", "--seed", "-1"], "--seed"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, args, message):
    result = run_cli("generate", "bioS", *args, "--out", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_malformed_fields_exit_2(tmp_path, fields_copy):
    (fields_copy / "majors.txt").write_text("Physics\nPhysics\n")
    result = run_cli(
        "generate", "bioS", "--n", 10, "--fields", fields_copy, "--out", tmp_path / "o"
    )
    assert result.returncode == 2 and "majors.txt" in result.stderr
    assert not (tmp_path / "o").exists()


def test_unknown_variant_and_missing_info_folder(tmp_path):
    result = run_cli("generate", "bioX", "--n", 10, "--out", tmp_path / "o")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert run_cli("info", tmp_path / "none").returncode == 2
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "manifest.json").write_text("{not json")
    assert run_cli("info", tmp_path / "junk").returncode == 2


def test_existing_folder_needs_overwrite(built, tmp_path):
    import shutil

    target = tmp_path / "t"
    shutil.copytree(built / "a", target)
    before = tree_bytes(target)
    assert generate("bioS-simple", "--n", 100, "--out", target) == 2
    assert tree_bytes(target) == before
    assert generate("bioS-simple", "--n", 100, "--out", target, "--overwrite") == 0
    assert dataset.read_manifest(target)["n"] == 100
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_overwrite_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    assert generate("bioS", "--n", 10, "--out", tmp_path / "mine", "--overwrite") == 2
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_a_crash_midway_leaves_nothing_complete(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset, "write_renderings", boom)
    assert generate("bioS-simple", "--n", 100, "--out", tmp_path / "out") == 130
    assert list(tmp_path.iterdir()) == []


def test_killed_generate_never_looks_complete(tmp_path):
    """SIGTERM partway through a large build: no folder at --out, nothing left behind."""
    out = tmp_path / "big"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bioknow",
            "generate",
            "bioS-simple",
            "--n",
            "300000",
            "--out",
            str(out),
        ],
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not any(tmp_path.iterdir()):
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []
    assert not os.path.exists(out / "manifest.json")


def test_named_tokenizer_and_token_stats(tmp_path, default_fields, capsys):
    from bioknow.data import tokenizer

    small = tokenizer.train(default_fields, vocab_size=1000)
    small.save(str(tmp_path / "small.json"))
    out = tmp_path / "d"
    assert generate("bioS", "--n", 500, "--tokenizer", tmp_path / "small.json", "--out", out) == 0
    m = dataset.read_manifest(out)
    stats = m["tokenizer"]
    assert stats["source"].endswith("small.json")
    assert stats["vocab_size"] == small.get_vocab_size() and stats["padded_vocab_size"] % 64 == 0
    assert stats["tokens_per_exposure"] == pytest.approx(stats["mean_tokens_per_biography"] + 1)
    assert (out / "tokenizer.json").read_text() == small.to_str()
    ds = dataset.open_dataset(out)
    assert stats["used_ids"] == len(ds.table.used_ids(online=True)) <= stats["vocab_size"]
    capsys.readouterr()
    assert cli.main(["info", str(out)]) == 0
    assert "used by the corpus" in capsys.readouterr().out

    small.pre_tokenizer = tokenizer.pre_tokenizers.ByteLevel(add_prefix_space=True)
    small.save(str(tmp_path / "broken.json"))
    broken = tmp_path / "b"
    assert (
        generate("bioS", "--n", 50, "--tokenizer", tmp_path / "broken.json", "--out", broken) == 2
    )
    assert not broken.exists()
