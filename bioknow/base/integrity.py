"""Digests of everything a number depends on, and their checks (docs/design.md §9.2).

A dataset folder's `manifest.json` lists the size and SHA-256 of every other file, and
`manifest.sha256` beside it covers the manifest itself (`sha256sum -c manifest.sha256`
reads it too). A run folder's `integrity.json` lists the size and SHA-256 of its
`config.json`, checkpoint files, final weights and evaluation reports, recorded as each
is written, and seals that list with a SHA-256 of its own. A reader checks every file
before it uses it (the size first, then the hash) and refuses a mismatch with an
InputError naming the file.
"""

import hashlib
import json
from pathlib import Path

from bioknow.base import atomic
from bioknow.base.errors import InputError

SEAL = "manifest.sha256"
RECORD = "integrity.json"
FORMAT = "bioknow-integrity/1"


def digest_bytes(data: bytes) -> dict:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def digest(path: Path) -> dict:
    """Size and SHA-256 of a file."""
    return {"bytes": Path(path).stat().st_size, "sha256": atomic.sha256(path)}


def read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise InputError(f"{path}: unreadable ({e.strerror or e})") from None


def parse_json(path: Path, data: bytes):
    """JSON from the bytes of `path`, or an InputError naming it."""
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None


def read_json(path: Path):
    """A JSON file no digest covers (sweep.json, a corpus header), read safely."""
    return parse_json(path, read_bytes(path))


def mismatch(path: Path, where: str) -> InputError:
    return InputError(f"{path}: differs from its checksum in {where} (changed or corrupt)")


def check(path: Path, expected: dict, where: str) -> None:
    """Refuse a missing file or one whose size or SHA-256 differs from `expected`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: missing (listed in {where})")
    if path.stat().st_size != expected["bytes"] or digest(path)["sha256"] != expected["sha256"]:
        raise mismatch(path, where)


def check_bytes(path: Path, data: bytes, expected: dict, where: str) -> bytes:
    if digest_bytes(data) != {"bytes": expected["bytes"], "sha256": expected["sha256"]}:
        raise mismatch(path, where)
    return data


# A dataset: manifest.json, sealed by manifest.sha256.


def seal_manifest(folder: Path) -> None:
    """Write manifest.sha256, the digest of manifest.json (in sha256sum's format)."""
    sha = atomic.sha256(Path(folder) / "manifest.json")
    atomic.write_bytes(Path(folder) / SEAL, f"{sha}  manifest.json\n".encode())


def manifest_bytes(folder: Path) -> bytes:
    """The bytes of manifest.json, checked against manifest.sha256."""
    folder = Path(folder)
    seal = folder / SEAL
    if not seal.is_file():
        raise InputError(
            f"{seal}: missing, so {folder / 'manifest.json'} cannot be checked (a dataset made "
            "before bioknow had it: generate it again, the same arguments give the same files)"
        )
    text = read_bytes(seal).decode("utf-8", errors="replace").split()
    data = read_bytes(folder / "manifest.json")
    if len(text) != 2 or text[1] != "manifest.json" or hashlib.sha256(data).hexdigest() != text[0]:
        raise InputError(
            f"{folder / 'manifest.json'}: differs from its checksum in {seal} (changed or corrupt)"
        )
    return data


# A run: integrity.json, sealed by its own digest.


def _seal(files: dict) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def load_record(run: Path) -> dict:
    """The files of a run's integrity.json: {relative path: {bytes, sha256}}."""
    path = Path(run) / RECORD
    if not path.is_file():
        raise InputError(
            f"{path}: missing, so the run cannot be checked (not a run, or one made by an "
            "older bioknow)"
        )
    record = parse_json(path, read_bytes(path))
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict) or record.get("seal") != _seal(files):
        raise InputError(f"{path}: corrupt (its seal does not match its list of files)")
    return files


def update_record(run: Path, add: dict | None = None, remove=()) -> None:
    """Add digests to (and drop paths from) the run's integrity.json, atomically."""
    path = Path(run) / RECORD
    files = load_record(run) if path.is_file() else {}
    for rel in remove:
        files.pop(rel, None)
    files.update(add or {})
    atomic.write_json(path, {"format": FORMAT, "files": files, "seal": _seal(files)})


def covered(run: Path, rel: str) -> dict:
    """The recorded digest of a run's file, or an InputError when none is recorded."""
    files = load_record(run)
    if rel not in files:
        raise InputError(
            f"{Path(run) / rel}: not covered by {Path(run) / RECORD} (written by an "
            "interrupted or foreign process)"
        )
    return files[rel]


def check_run_file(run: Path, rel: str) -> Path:
    """A run's file, checked against integrity.json; its path."""
    check(Path(run) / rel, covered(run, rel), str(Path(run) / RECORD))
    return Path(run) / rel


def read_run_json(run: Path, rel: str):
    """A run's JSON file, checked against integrity.json, then parsed."""
    path = Path(run) / rel
    expected = covered(run, rel)
    if not path.is_file():
        raise InputError(f"{path}: missing (listed in {Path(run) / RECORD})")
    data = check_bytes(path, read_bytes(path), expected, str(Path(run) / RECORD))
    return parse_json(path, data)


def write_run_json(run: Path, rel: str, obj) -> None:
    """Write a run's JSON file atomically and record its digest."""
    data = (json.dumps(obj, indent=2) + "\n").encode()
    atomic.write_bytes(Path(run) / rel, data)
    update_record(run, {rel: digest_bytes(data)})
