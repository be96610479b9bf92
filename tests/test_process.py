"""The commands a sweep runs: shielded from a cluster's warning signal, stopped together."""

import signal
import sys
import threading
import time

from bioknow.base import process

WARNED = "import os, signal; os.kill(os.getpid(), signal.SIGUSR2); print('still here')"


def test_a_shielded_child_never_receives_the_signal(tmp_path):
    out = tmp_path / "out"
    with open(out, "w") as f:
        assert (
            process.Children(shield=(signal.SIGUSR2,)).run([sys.executable, "-c", WARNED], f, {})
            == 0
        )
    assert out.read_text() == "still here\n"
    with open(out, "w") as f:  # unshielded, USR2 ends it
        assert process.Children().run([sys.executable, "-c", WARNED], f, {}) == -signal.SIGUSR2


def test_stop_ends_every_child_and_starts_no_more(tmp_path):
    children = process.Children()
    statuses = []
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]

    def run():
        with open(tmp_path / "log", "a") as f:
            statuses.append(children.run(sleeper, f, {}))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    while len(children.live) < 2:
        time.sleep(0.01)
    started = time.monotonic()
    children.stop()
    assert time.monotonic() - started < 30
    for t in threads:
        t.join()
    assert statuses == [-signal.SIGTERM] * 2
    with open(tmp_path / "log", "a") as f:
        assert children.run(sleeper, f, {}) == 128 + signal.SIGTERM  # not started
    assert not children.live
