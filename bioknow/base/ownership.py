"""What a folder bioknow wrote is, and what a command may do with its --out (DESIGN
section 8: nothing lost).

Every folder bioknow writes holds one marker, `bioknow-folder.json` (its kind: dataset,
run, export, corpus or sweep; the marker's format; the bioknow that wrote it), written by
bioknow alone. `claim` is the one decision every command with --out makes before it
writes: a folder that is absent or empty is new; one of the command's own kind may be
continued (a corpus or sweep resumed) or, with --overwrite, replaced, but only when every
file in it is one its kind's record lists (a dataset's manifest.json, a run's
integrity.json, an export's marker, a corpus's shard names): never a folder of another
kind, one holding a file bioknow did not write, the command's own input (or a folder
inside it, or one containing it), nor a symbolic link. Folders of an earlier bioknow,
without the marker, are recognised by their sealed records (a manifest.json matching
manifest.sha256, a sealed integrity.json, an export's bioknow.json, corpus.json or
.partial.json, sweep.json) and replaced only when they hold exactly what those list.
"""

import json
import os
import re
from pathlib import Path

from bioknow import __version__
from bioknow.base import atomic, integrity
from bioknow.base.errors import InputError

MARKER = "bioknow-folder.json"
FORMAT = "bioknow-folder/1"
KINDS = ("dataset", "run", "export", "corpus", "sweep")
# Files a transformers export of an earlier bioknow (without the marker) may hold.
LEGACY_EXPORT = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "bioknow.json",
}
# Paths a kind holds besides those its record lists: (files, folders), as regexes.
PATTERNS = {
    "dataset": ("", ""),
    "run": (
        r"config\.json|integrity\.json|metrics\.jsonl|lock|checkpoints/latest"
        r"|(tensorboard|wandb)/.+",
        r"checkpoints|checkpoints/step-\d{8}|(tensorboard|wandb)(/.+)?",
    ),
    "export": (r"eval[^/]*\.json", ""),  # eval --hf-model writes its report beside the model
    "corpus": (
        r"corpus\.json|\.partial\.json|(tokens|label_kinds)-\d{5}\.bin|train-\d{5}\.parquet",
        "",
    ),
    "sweep": ("", ""),  # never replaced (sweep has no --overwrite)
}


def marker(kind: str, files: list[str] | None = None) -> dict:
    """The marker of a folder of `kind`; `files`: what an export holds (it has no record)."""
    about = {"format": FORMAT, "kind": kind, "bioknow": __version__}
    return about if files is None else {**about, "files": sorted(files)}


def write_marker(folder: Path, kind: str, files: list[str] | None = None) -> None:
    atomic.write_json(Path(folder) / MARKER, marker(kind, files))


def read_marker(folder: Path) -> dict | None:
    """The folder's marker, or None when it has none or one bioknow did not write."""
    path = Path(folder) / MARKER
    if not path.is_file() or path.is_symlink():
        return None
    try:
        about = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(about, dict) or about.get("format") != FORMAT:
        return None
    return about if about.get("kind") in KINDS else None


def _json(path: Path):
    try:
        return integrity.read_json(path) if path.is_file() else None
    except InputError:
        return None


def legacy_kind(folder: Path) -> str | None:
    """The kind of a folder an earlier bioknow wrote (no marker), by its records."""
    folder = Path(folder)
    if (folder / "manifest.json").is_file() and (folder / integrity.SEAL).is_file():
        return "dataset"
    if (folder / integrity.RECORD).is_file() and (folder / "config.json").is_file():
        return "run"
    about = _json(folder / "bioknow.json")
    if isinstance(about, dict) and "run" in about and (folder / "config.json").is_file():
        return "export"
    header = _json(folder / "corpus.json") or _json(folder / ".partial.json")
    if isinstance(header, dict) and str(header.get("format_version", "")).startswith(
        "bioknow-corpus"
    ):
        return "corpus"
    about = _json(folder / "sweep.json")
    return "sweep" if isinstance(about, dict) and "config" in about else None


def kind_of(folder: Path) -> str | None:
    """What a folder is: its marker's kind, or an earlier bioknow's kind; None: not ours."""
    about = read_marker(folder)
    if about is not None:
        return about["kind"]
    return None if (Path(folder) / MARKER).exists() else legacy_kind(folder)


def recorded(folder: Path, kind: str) -> set[str]:
    """The files a folder's record lists (a dataset's manifest, a run's integrity.json, an
    export's marker), with the record itself; an InputError if it is unreadable."""
    folder = Path(folder)
    names = {MARKER}
    if kind == "dataset":
        manifest = integrity.parse_json(folder / "manifest.json", integrity.manifest_bytes(folder))
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if not isinstance(files, dict):
            raise InputError(f"{folder / 'manifest.json'}: lists no files")
        names |= {"manifest.json", integrity.SEAL, *files}
    elif kind == "run":
        names |= set(integrity.load_record(folder))
    elif kind == "export":
        about = read_marker(folder)
        names |= set(about.get("files", [])) if about else LEGACY_EXPORT
    return names


def foreign(folder: Path, kind: str) -> list[str]:
    """The paths in `folder` that bioknow did not write as a folder of `kind` (symbolic
    links included: bioknow writes none), in order."""
    names = recorded(folder, kind)
    files, folders = (re.compile(p) if p else None for p in PATTERNS[kind])
    parents = {Path(n).parent.as_posix() for n in names}
    out = []
    for top, dirs, entries in os.walk(folder):
        base = Path(top).relative_to(folder)
        for name in sorted(dirs):
            rel = (base / name).as_posix()
            path = Path(top) / name
            if atomic.TEMP.fullmatch(name):
                dirs.remove(name)  # an unfinished build of bioknow's: its own
            elif path.is_symlink() or not (
                any(p == rel or p.startswith(rel + "/") for p in parents)
                or (folders and folders.fullmatch(rel))
            ):
                out.append(rel)
                dirs.remove(name)
        for name in entries:
            rel = (base / name).as_posix()
            ours = rel in names or (files and files.fullmatch(rel)) or atomic.TEMP.fullmatch(name)
            if (Path(top) / name).is_symlink() or not ours:
                out.append(rel)
    return sorted(out)


def replaceable(folder: Path, kind: str) -> str | None:
    """Why --overwrite may not replace `folder` with a folder of `kind` (None: it may)."""
    found = kind_of(folder)
    if found is None:
        return f"not a folder bioknow wrote (no {MARKER})"
    if found != kind:
        return f"it is a bioknow {found}, not {'an' if kind[0] in 'ae' else 'a'} {kind}"
    try:
        others = foreign(folder, kind)
    except InputError as e:
        return f"its files cannot be told from others ({e})"
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        return f"it holds {len(others)} file(s) bioknow did not write ({shown})"
    return None


def _overlap(out: Path, inputs) -> str | None:
    """How `out` overlaps one of the command's inputs, if it does."""
    target = out.resolve()
    for given in inputs:
        if given is None or not os.path.exists(given):
            continue
        source = Path(given).resolve()
        if target == source:
            return f"is the command's own input {given}"
        if source in target.parents:
            return f"is inside the command's input {given}"
        if target in source.parents:
            return f"contains the command's input {given}"
    return None


def claim(out, kind: str, overwrite: bool = False, inputs=(), resume: bool = False) -> str:
    """The one decision before a command writes its folder `out` of `kind`: "new" (absent
    or empty), "continue" (a folder of that kind, `resume` allowed, no --overwrite) or
    "replace" (--overwrite, and `replaceable`); anything else is an InputError in one line.
    `inputs`: the paths the command reads, which `out` must neither be, be inside, nor
    contain."""
    out = Path(out)
    if out.is_symlink():
        raise InputError(f"{out}: is a symbolic link; bioknow writes no folder through one")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    overlap = _overlap(out, inputs)
    if overlap:
        raise InputError(f"{out}: {overlap}; choose another --out")
    lock = {"lock"} if kind == "run" else set()  # a run's lock, taken before it is begun
    if not out.exists() or not any(p.name not in lock for p in out.iterdir()):
        return "new"
    if resume and not overwrite and kind_of(out) == kind:
        return "continue"
    why = replaceable(out, kind)
    if not overwrite:
        hint = f" ({why})" if why else " (use --overwrite)"
        raise InputError(f"{out}: folder exists and is not empty{hint}")
    if why:
        raise InputError(f"{out}: --overwrite refused: {why}")
    return "replace"
