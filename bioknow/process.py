"""Processes (DESIGN section 8): one writer per run folder, and children that die with
the sweep that started them.

A run folder's writer holds `RUN/lock`: a file holding its pid, locked with flock(2) for
as long as the process lives. The kernel drops the lock when the process dies however it
dies, so a lock left by a dead process is taken over; a live one is refused, naming its
pid.
"""

import ctypes
import fcntl
import os
import signal
import sys
from pathlib import Path

from bioknow.errors import InputError

LOCK = "lock"
PR_SET_PDEATHSIG = 1
PARENT_ENV = "BIOKNOW_PARENT_PID"  # set by a sweep for its children


def alive(pid: int) -> bool:
    """Whether a process of that pid exists (and is not this one)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """`with RunLock(run):` holds the run folder's lock (creating the folder)."""

    def __init__(self, run: Path):
        self.path = Path(run) / LOCK
        self.fd = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise InputError(
                    f"{self.path.parent}: in use by process {owner} (it holds {self.path}); "
                    "wait for it to finish or stop it"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # else a releasing owner unlinked it meanwhile: take the new one
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def die_with_parent() -> None:
    """In a sweep's child (PARENT_ENV set): ask Linux to send SIGTERM when the parent
    dies, and exit at once if it is already gone."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if str(os.getppid()) != parent:
        os._exit(128 + signal.SIGTERM)


def child_env(env: dict) -> dict:
    """The environment of a child that must die with this process."""
    return {**os.environ, **env, PARENT_ENV: str(os.getpid())}
