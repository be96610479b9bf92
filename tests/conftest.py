import contextlib
import io
import os
import shutil
from pathlib import Path

import pytest

from bioknow.data import fields


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


# Property-based tests: derandomized and bounded for CI (about a minute in all);
# HYPOTHESIS_PROFILE=long runs many more examples, locally.
try:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "ci",
        derandomize=True,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    settings.register_profile(
        "long",
        parent=settings.get_profile("ci"),
        derandomize=False,
        max_examples=2000,
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # hypothesis is a dev dependency; its tests are skipped without it
    pass


def run_cli(*args) -> tuple[int, str, str]:
    """`bioknow ARGS` in this process: (exit status, stdout, stderr)."""
    from bioknow import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli.main([str(a) for a in args])
        except SystemExit as e:  # argparse's own errors
            status = e.code
    return status, out.getvalue(), err.getvalue()


TINY_DATA = "generate bioD --n 24 --k 2 --c 1 --d 10 --l 1 --t 20 --vocab-size 320".split()
TINY_TRAIN = ["--model", "gpt2-1-1", "--exposures", 10, "--batch", 1, "--device", "cpu"]
TINY_TRAIN += ["--log-every", 2, "--checkpoint-every", 5]  # 13 steps


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny dataset (bioD: quick to open) and a finished, evaluated run on it."""
    import torch

    root = tmp_path_factory.mktemp("tiny")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_cli(*TINY_DATA, "--out", root / "data")[0] == 0
        assert run_cli("train", "--data", root / "data", *TINY_TRAIN, "--out", root / "run")[0] == 0
        assert run_cli("eval", root / "run", "--device", "cpu")[0] == 0
    finally:
        torch.set_num_threads(threads)
    return root


def copy_tiny(tiny: Path, dest: Path) -> Path:
    """A copy of the tiny dataset and run, the run's config pointing at the copied data."""
    from bioknow.base import integrity

    shutil.copytree(tiny, dest)
    config = integrity.read_run_json(dest / "run", "config.json")
    config["data"] = str((dest / "data").resolve())
    integrity.write_run_json(dest / "run", "config.json", config)
    return dest
