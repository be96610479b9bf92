"""Processes (docs/design.md §9.4): one writer per run folder, and children that die with
the sweep that started them and can be asked, all at once, to checkpoint and stop.

A run folder's writer holds `RUN/lock`: a file holding its pid, locked with flock(2) for
as long as the process lives. The kernel drops the lock when the process dies however it
dies, so a lock left by a dead process is taken over; a live one is refused, naming its
pid.
"""

import ctypes
import fcntl
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from bioknow.base.errors import InputError

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
        return self if self.fd is not None else self.acquire()  # acquired already, or now

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


class Children:
    """The commands a process runs, from any of its threads, so that `stop` can ask them all
    to checkpoint and stop. `shield`: signals the children never receive (blocked in them:
    a cluster's warning before a time limit is for this process, which passes SIGTERM on)."""

    def __init__(self, shield=()):
        self.shield = set(shield)
        self.lock = threading.Lock()
        self.live: set[subprocess.Popen] = set()
        self.stopping = False

    def run(self, cmd: list[str], out, env: dict) -> int:
        """Run `cmd` to its end, its output to the open file `out`; its exit status (that of
        SIGTERM, without starting it, once stopping)."""
        with self.lock:
            if self.stopping:
                return 128 + signal.SIGTERM
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, self.shield)
            try:  # a child starts with the mask of the thread that starts it
                child = subprocess.Popen(
                    cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env(env)
                )
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            self.live.add(child)
        try:
            return child.wait()
        finally:
            with self.lock:
                self.live.discard(child)

    def stop(self) -> None:
        """Send SIGTERM to every child (a train checkpoints and exits), start no more, and
        return once they have all exited. Safe in a signal handler of a thread that never
        calls `run`."""
        with self.lock:
            self.stopping = True
            children = list(self.live)
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:  # waits without reaping: the thread in run() collects the status
                os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
            except ChildProcessError:
                pass  # already collected


def holder(folder: Path) -> int | None:
    """The pid written in a folder's lock when that process is alive on this machine, else
    None (the lock itself is left alone)."""
    try:
        pid = int((Path(folder) / LOCK).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def hold(f) -> None:
    """Lock the open file `f` for as long as it stays open (a sweep holds a point's log so
    while it works on the point: `held` tells so from any process)."""
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)


def held(path: Path) -> bool:
    """Whether a live process holds the file `path` locked with `hold`."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
