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


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread, and do not slow to a crawl on a busy CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
