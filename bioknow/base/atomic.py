"""Nothing half-written ever looks complete: build under a temporary name, then rename.

Temporary names carry the writer's pid (`.NAME.partial-PID`), so the leftovers of a dead
process are told apart from a live one's and removed (`clean_stale`). Replacing a folder
takes three renames (`new_dir`): the finished build becomes `.NAME.ready-PID`, the old
folder `.NAME.old-PID`, then the build takes the name; a process killed between them
leaves names from which `recover` finishes the replacement (or, with no finished build,
puts the old folder back).
"""

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bioknow.base.process import alive

TEMP = re.compile(r"\.(?P<name>.+)\.(?P<kind>partial|ready|old)-(?P<pid>\d+)")


def _default_mode() -> int:
    """The mode a new file gets under this process's umask (0644 under the usual 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _default_mode()


def readable(folder: Path) -> None:
    """Give every file below `folder` the mode new files get: some writers (safetensors)
    make theirs readable by their owner alone."""
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, FILE_MODE)


def temp_path(path: Path, kind: str = "partial") -> Path:
    """The temporary name of `path` for this process: .NAME.KIND-PID beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clean_stale(folder: Path) -> list[str]:
    """Remove the .NAME.partial-PID files and folders of dead processes in `folder`."""
    removed = []
    if Path(folder).is_dir():
        for entry in Path(folder).iterdir():
            match = TEMP.fullmatch(entry.name)
            if match and match["kind"] == "partial" and not alive(int(match["pid"])):
                _remove(entry)
                removed.append(str(entry))
    return removed


def recover(out: Path) -> list[str]:
    """Finish (or roll back) a replacement of `out` that a dead process left half done,
    and remove the builds it never finished; what was done, one line each."""
    out = Path(out)
    done = []
    if not out.parent.is_dir():
        return done
    found = {}
    for entry in out.parent.iterdir():
        match = TEMP.fullmatch(entry.name)
        if match and match["name"] == out.name and not alive(int(match["pid"])):
            found.setdefault(int(match["pid"]), {})[match["kind"]] = entry
    for pid, kinds in sorted(found.items()):
        if "partial" in kinds:
            _remove(kinds["partial"])
            done.append(f"removed {kinds['partial']}, an unfinished build of process {pid}")
        if "ready" in kinds:  # the build was complete: finish the replacement
            old = kinds.get("old") or out.parent / f".{out.name}.old-{pid}"
            if out.exists() and not kinds.get("old"):
                os.replace(out, old)
            os.replace(kinds["ready"], out)
            done.append(f"{out}: finished its replacement, interrupted in process {pid}")
            _remove(old)
        elif "old" in kinds:
            if out.exists():
                _remove(kinds["old"])
            else:  # no finished build to put in its place: roll back
                os.replace(kinds["old"], out)
                done.append(f"{out}: restored the folder an interrupted replacement had moved")
    return done


@contextmanager
def new_dir(out: Path, check: Callable[[], object] | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it replaces `out` by renames.
    On any error or interrupt it is removed and `out` is left as it was. `check`: the
    decision whether `out` may be replaced (`bioknow.base.ownership.claim`), made once an
    interrupted replacement is finished."""
    out = Path(out)
    recover(out)
    if check is not None:
        check()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    readable(tmp)
    ready, old = temp_path(out, "ready"), temp_path(out, "old")
    os.replace(tmp, ready)
    if out.exists():
        os.replace(out, old)
    os.replace(ready, out)
    shutil.rmtree(old, ignore_errors=True)


def write_bytes(path: Path, data: bytes) -> None:
    """Write a file under a temporary name, flush it to disk, then rename it into place."""
    tmp = temp_path(path)
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
