"""--out and --overwrite, every command that writes a folder against every kind of folder
already there (`bioknow.base.ownership`): a folder of the command's own kind that bioknow made
is replaced; anything else (another kind, a folder holding a file bioknow did not write,
a foreign model folder, a symbolic link, the command's own input, a folder inside it or
one containing it) is refused with exit status 2 and one line, and left byte-identical.
Folders of an earlier bioknow (no marker) are replaced only when they hold exactly what
their records list."""

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import copy_tiny, run_cli, tree_bytes

from bioknow.base import integrity, ownership

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAIN = ["--model", "gpt2-1-1", "--exposures", 1, "--batch", 1, "--device", "cpu"]
GRID = {
    "datasets": [{"variant": "bioS-simple", "n": 10}],
    "models": ["gpt2-1-1"],
    "exposures": 1,
    "train": {"device": "cpu"},
}


def command(name: str, base: Path, out: Path, inputs: dict | None = None) -> list:
    """The command line of `name` writing `out`, reading the folders in `base`."""
    inputs = inputs or {}
    data, run = inputs.get("data", base / "data"), inputs.get("run", base / "run")
    return {
        "generate": [
            *"generate bioD --n 24 --k 2 --c 1 --d 10 --l 1 --t 20 --vocab-size 320".split(),
            "--fields",
            inputs.get("fields", base / "data" / "fields"),
            "--out",
            out,
            "--overwrite",
        ],
        "train": ["train", "--data", data, *TRAIN, "--out", out, "--overwrite"],
        "export": ["export", run, "--out", out, "--overwrite"],
        "corpus": ["corpus", data, "--exposures", 1, "--out", out, "--overwrite"],
        "sweep": ["sweep", base / "grid.yaml", "--out", out],
    }[name]


def strip_marker(folder: Path, kind: str) -> None:
    """Make a folder look as an earlier bioknow (before the marker) left it."""
    (folder / ownership.MARKER).unlink()
    if kind == "dataset":
        manifest = json.loads((folder / "manifest.json").read_text())
        del manifest["files"][ownership.MARKER]
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        integrity.seal_manifest(folder)
    elif kind == "run":
        integrity.update_record(folder, remove=[ownership.MARKER])


@pytest.fixture(scope="module")
def base(tiny, tmp_path_factory):
    """One folder of every kind: the tiny dataset and run, an export, a corpus, a sweep;
    the same without the marker (an earlier bioknow's); a sweep config."""
    root = copy_tiny(tiny, tmp_path_factory.mktemp("overwrite") / "base")
    assert run_cli("export", root / "run", "--out", root / "export")[0] == 0
    assert run_cli("corpus", root / "data", "--exposures", 1, "--out", root / "corpus")[0] == 0
    (root / "sweep").mkdir()
    (root / "sweep" / "sweep.json").write_text(json.dumps({"config": {**GRID, "seeds": [7]}}))
    ownership.write_marker(root / "sweep", "sweep")
    for kind in ("dataset", "run", "export", "corpus"):
        source = root / {"dataset": "data"}.get(kind, kind)
        shutil.copytree(source, root / f"legacy-{kind}")
        strip_marker(root / f"legacy-{kind}", kind)
    (root / "grid.yaml").write_text(yaml.safe_dump(GRID))
    return root


KIND = {"generate": "dataset", "train": "run", "export": "export", "corpus": "corpus"}
KIND["sweep"] = "sweep"
FOLDERS = ["dataset", "run", "export", "corpus", "sweep"]
FOLDERS += [f"legacy-{k}" for k in ("dataset", "run", "export", "corpus")]


def make_target(base: Path, target: str, dest: Path) -> None:
    """The folder `target` names, at `dest`: a copy of one of `base`'s, a foreign model
    folder, one of bioknow's with a user's file added, or a symbolic link to a folder."""
    if target == "foreign":  # a Hugging Face model folder with the user's own notes
        dest.mkdir()
        (dest / "config.json").write_text('{"model_type": "gpt2"}\n')
        (dest / "notes.txt").write_text("my own notes\n")
    elif target.startswith("symlink"):
        os.symlink(base / "empty", dest)
    else:
        kind = target.removeprefix("user-file-in-")
        shutil.copytree(base / {"dataset": "data"}.get(kind, kind), dest, symlinks=True)
        if target.startswith("user-file-in-"):
            (dest / "checkpoints" if kind == "run" else dest).joinpath("mine.txt").write_text("!")


def expect_refused(args: list, watched: list[Path]) -> str:
    before = [tree_bytes(p) if p.is_dir() else None for p in watched]
    status, out, err = run_cli(*args)
    assert status == 2, (args, out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert [tree_bytes(p) if p.is_dir() else None for p in watched] == before
    return err


CASES = [
    (name, target)
    for name in KIND
    for target in [*FOLDERS, "foreign", "symlink", *(f"user-file-in-{k}" for k in KIND.values())]
    if not (name == "sweep" and target.startswith("legacy"))
]


@pytest.mark.parametrize("name, target", CASES, ids=lambda x: x)
def test_out_against_every_kind_of_folder(base, tmp_path, name, target):
    (base / "empty").mkdir(exist_ok=True)
    out = tmp_path / "target"
    make_target(base, target, out)
    same = target.removeprefix("legacy-") == KIND[name]
    if same and name != "sweep":  # replaced, by a folder of the same kind
        status, _, err = run_cli(*command(name, base, out))
        assert status == 0, err
        assert ownership.read_marker(out)["kind"] == KIND[name]
        assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
        return
    watched = [out, base / "data", base / "run", base / "empty"]
    err = expect_refused(command(name, base, out), watched)
    assert out.is_symlink() == target.startswith("symlink")
    if target.startswith("user-file-in-") and name != "sweep" and same:
        assert "bioknow did not write" in err
    if target == "foreign" and name != "sweep":
        assert "not a folder bioknow wrote" in err


OVERLAPS = {  # the command, its input replaced by a folder overlapping its --out
    "generate": "fields",
    "train": "data",
    "export": "run",
    "corpus": "data",
}


@pytest.mark.parametrize("relation", ["own", "inside", "containing"])
@pytest.mark.parametrize("name", list(OVERLAPS))
def test_out_never_overlaps_the_input(base, tmp_path, name, relation):
    """--out is never the command's input, a folder inside it, or one containing it,
    even where the folder is of the command's own kind (`export run2 --out run2`)."""
    holder = tmp_path / "holder"
    holder.mkdir()
    source = {"fields": base / "data", "data": base / "data", "run": base / "run"}
    kind = OVERLAPS[name]
    shutil.copytree(source[kind], holder / "input")
    # generate's input: the fields of a dataset, which the folder containing them is
    given = holder / "input" / "fields" if kind == "fields" else holder / "input"
    out = {"own": given, "inside": given / "sub", "containing": given.parent}[relation]
    err = expect_refused(command(name, base, out, {kind: given}), [holder])
    assert "input" in err and "--out" in err
