"""Nothing half-written ever looks complete: build under a temporary name, then rename."""

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bioknow.errors import InputError


def check_target(out: Path, overwrite: bool, marker: str) -> None:
    """Refuse an output folder that holds something, unless `overwrite` is given and the
    folder is one of ours (it has `marker`) or empty."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"{out}: folder exists and is not empty (use --overwrite)")
        if not (out / marker).is_file():
            raise InputError(f"{out}: refusing to overwrite a folder without {marker}")


@contextmanager
def new_dir(out: Path, overwrite: bool = False, marker: str = "manifest.json") -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it replaces `out` in one rename.
    On any error or interrupt it is removed and `out` is left as it was."""
    out = Path(out)
    check_target(out, overwrite, marker)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def write_bytes(path: Path, data: bytes) -> None:
    """Write a file under a temporary name, flush it to disk, then rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
