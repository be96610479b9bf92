import shutil
from pathlib import Path

import pytest

from bioknow import fields


@pytest.fixture(scope="session")
def default_fields():
    return fields.load()


@pytest.fixture
def fields_copy(tmp_path):
    """A writable copy of the default fields folder."""
    dest = tmp_path / "fields"
    shutil.copytree(fields.DEFAULT_DIR, dest)
    return dest


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
