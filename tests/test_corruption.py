"""Corruption: every file of a dataset and of a run, one byte flipped or the file cut in
half. Every command that reads the file exits 2 with one line naming it; a command that
does not read it gives the bit-identical result."""

import json
import shutil

import pytest
from conftest import TINY_TRAIN, copy_tiny, run_cli, tree_bytes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def readers(pair, new) -> dict[str, list]:
    data, run = pair / "data", pair / "run"
    return {
        "eval": ["eval", run, "--device", "cpu", "--json"],
        "resume": ["train", "--resume", "--out", run, "--json"],
        "train": ["train", "--data", data, *TINY_TRAIN, "--out", new],
        "corpus": ["corpus", data, "--exposures", 2, "--out", new, "--json"],
        "export": ["export", run, "--out", new, "--json"],
        "info": ["info", data, "--json"],
        "verify": ["info", data, "--verify", "--json"],
        "info-run": ["info", run, "--json"],
        "verify-run": ["info", run, "--verify", "--json"],
    }


DATASET_READERS = ("eval", "resume", "train", "corpus", "export", "info", "verify")
RUN_READERS = ("eval", "resume", "export", "info-run", "verify-run")


def result(name: str, status: int, out: str, new) -> object:
    """What a command made: its output, or (train, corpus, export) the files it wrote."""
    if name == "train":  # its timings differ from run to run; its weights must not
        return (new / "model.safetensors").read_bytes(), (new / "config.json").read_bytes()
    if name in ("corpus", "export"):
        return tree_bytes(new)
    return json.loads(out)


def flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def cut(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.fixture(scope="module")
def pair(tiny, tmp_path_factory):
    """A copy of the tiny dataset and run, and each reader's result on it intact."""
    pair = copy_tiny(tiny, tmp_path_factory.mktemp("corruption") / "pair")
    new = pair.parent / "new"
    baseline = {}
    for name, args in readers(pair, new).items():
        status, out, err = run_cli(*args)
        assert status == 0, (name, err)
        baseline[name] = result(name, status, out, new)
        shutil.rmtree(new, ignore_errors=True)
    return pair, baseline


# every file of the tiny pair (checked below, so that none escapes the suite)
FILES = {
    "data": [
        "README.md",
        "bioknow-folder.json",
        "manifest.json",
        "manifest.sha256",
        "population.parquet",
        "diversity.parquet",  # bioD: the diversity sets
        "renderings/train-00000-of-00001.parquet",
        "tokenizer.json",
        *(
            f"fields/{name}.txt"
            for name in (
                "cities",
                "employers",
                "first_names",
                "last_names",
                "majors",
                "middle_names",
                "universities",
            )
        ),
        *(
            f"fields/sentences/{name}.txt"
            for name in ("birth_city", "birth_date", "employer", "major", "university", "work_city")
        ),
    ],
    "run": [
        "bioknow-folder.json",
        "config.json",
        "integrity.json",
        "checkpoints/step-00000013/model.safetensors",
        "checkpoints/step-00000013/optimizer.pt",
        "checkpoints/step-00000013/state.json",
        "model.safetensors",
        "metrics.jsonl",
        "eval.json",
    ],
}


def test_every_file_is_listed(pair):
    pair, _ = pair
    for folder, listed in FILES.items():
        assert sorted(tree_bytes(pair / folder)) == sorted(listed)


@pytest.mark.parametrize("damage", [flip, cut], ids=["flip", "cut"])
@pytest.mark.parametrize(
    "folder, rel", [(f, r) for f, rels in FILES.items() for r in rels], ids=lambda x: str(x)
)
def test_a_damaged_file_is_named_or_unused(pair, folder, rel, damage):
    pair, baseline = pair
    new = pair.parent / "new"
    path = pair / folder / rel
    intact, pristine = path.read_bytes(), tree_bytes(pair)
    path.write_bytes(damage(intact))
    commands = readers(pair, new)
    try:
        for name in DATASET_READERS if folder == "data" else RUN_READERS:
            status, out, err = run_cli(*commands[name])
            if status == 0:
                assert result(name, status, out, new) == baseline[name], (name, "changed")
            else:
                assert status == 2 and len(err.strip().splitlines()) == 1, (name, err)
                assert path.name in err, (name, err)
            shutil.rmtree(new, ignore_errors=True)
    finally:
        path.write_bytes(intact)
    assert tree_bytes(pair) == pristine  # no reader changed anything


# consistent tampering: a file edited and its checksum forged to match; the figures that
# can be recomputed from what is sealed are checked when the file is read


@pytest.fixture(scope="module")
def bios_data(tmp_path_factory):
    """A tiny bioS-simple dataset (log2 S0 and every rendering stored)."""
    root = tmp_path_factory.mktemp("bios")
    args = ["generate", "bioS-simple", "--n", 40, "--vocab-size", 320, "--out", root / "ds"]
    assert run_cli(*args)[0] == 0
    return root / "ds"


def reseal(folder, change) -> None:
    from bioknow.base import integrity

    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    integrity.seal_manifest(folder)


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda m: m.update(n=30), "population.parquet"),
        (lambda m: m.update(log2_s0=m["log2_s0"] + 1), "log2_s0"),
        (lambda m: m["renderings"].update(stored=30), "renderings"),
        (lambda m: m.update(n0=m["n0"] // 2), "n0"),
    ],
    ids=["n", "log2_s0", "stored", "n0"],
)
def test_a_resealed_manifest_that_disagrees_with_its_files_is_refused(
    bios_data, tmp_path, change, named
):
    data = tmp_path / "ds"
    shutil.copytree(bios_data, data)
    reseal(data, change)
    new = tmp_path / "new"
    for args in (
        ["info", data],
        ["corpus", data, "--exposures", 2, "--out", new],
        ["train", "--data", data, *TINY_TRAIN, "--out", new],
    ):
        status, _, err = run_cli(*args)
        assert status == 2 and len(err.strip().splitlines()) == 1, (args, err)
        assert named in err and "manifest.json" in err, err
        assert not new.exists()


def forge_json(run, rel, change) -> None:
    from bioknow.base import integrity

    obj = integrity.read_run_json(run, rel)
    change(obj)
    integrity.write_run_json(run, rel, obj)


def test_a_config_changed_after_training_is_refused(tiny, tmp_path):
    run = copy_tiny(tiny, tmp_path / "pair") / "run"
    forge_json(run, "config.json", lambda c: c.update(exposures=c["exposures"] * 2))
    for args in (
        ["info", run],
        ["eval", run, "--device", "cpu"],
        ["train", "--resume", "--out", run],
        ["export", run, "--out", tmp_path / "hf"],
    ):
        status, _, err = run_cli(*args)
        assert status == 2 and len(err.strip().splitlines()) == 1, (args, err)
        assert "config.json: exposures is 20" in err and "trained with 10" in err, err
    assert not (tmp_path / "hf").exists()


def exceed(report: dict) -> None:
    """Bits and R moved together past Rmax: R is still bits / P."""
    report["bits"] = report["bits_max"] * 2
    report["R"] = report["bits"] / report["P"]


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda r: r.update(R=r["R"] + 0.5), "is not bits / P"),
        (exceed, "exceeds Rmax"),
        (lambda r: r.update(P=r["P"] + 1), "is not the run's P"),
    ],
    ids=["R", "R-max", "P"],
)
def test_an_edited_report_is_refused(tiny, tmp_path, change, named):
    run = copy_tiny(tiny, tmp_path / "pair") / "run"
    forge_json(run, "eval.json", change)
    status, _, err = run_cli("info", run)
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert "eval.json" in err and named in err, err
