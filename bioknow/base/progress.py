"""Progress of long commands, on a terminal and off one.

On a terminal: a tqdm bar. Under a pipe, `nohup`, a sweep's or a cluster's log file: a
plain line every `BIOKNOW_PROGRESS_SECONDS` (default 30) and at the end, e.g.

    train: 1,200 of 76,600 steps (1.6%), loss 2.2513, 33,012 tokens/s, 1.4 min, ETA 38 min

so that a log always says how far a command got and how long it has to go; train's
figures on each line (loss, tokens/s) are measured since the previous line.
"""

import os
import sys
import time
from collections.abc import Callable

from tqdm import tqdm

INTERVAL = 30.0


def interval() -> float:
    try:
        return max(0.0, float(os.environ.get("BIOKNOW_PROGRESS_SECONDS", INTERVAL)))
    except ValueError:
        return INTERVAL


def minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """`total` units of work from `initial` on; `enabled` False shows nothing. The same
    calls as a tqdm bar: update(n), set_postfix(**figures), close(); a context manager.
    `share`, if given, says what share of all the work is done (0 to 1), for an ETA
    when the units differ in size. `measure`, if given, gives the figures of each plain
    line, measured since the previous one (the bar shows those of `set_postfix`)."""

    def __init__(
        self,
        total,
        desc: str,
        unit: str,
        initial: int = 0,
        enabled: bool = True,
        share: Callable[[], float] | None = None,
        measure: Callable[[], dict] | None = None,
    ):
        self.total, self.desc, self.unit, self.share = total, desc, unit, share
        self.measure = measure
        self.share_at_start = share() if share else 0.0
        self.n = self.initial = initial
        self.figures: dict[str, str] = {}
        self.enabled = enabled
        self.started = self.shown = time.perf_counter()
        terminal = enabled and sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not terminal)
        self.lines = enabled and not terminal

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def tick(self) -> None:
        """Show a line if one is due, without progress (for work reported on its own)."""
        self.update(0)

    def update(self, n: int = 1) -> None:
        self.n += n
        self.bar.update(n)
        now = time.perf_counter()
        if self.lines and now - self.shown >= interval():
            self.shown = now
            self.print()

    def set_postfix(self, **figures) -> None:
        self.figures = {k: str(v) for k, v in figures.items()}
        self.bar.set_postfix(**figures)

    def print(self, closing: bool = False) -> None:
        print(self.line(closing), file=sys.stderr, flush=True)

    def line(self, closing: bool = False) -> str:
        """What has been done, the latest figures (at the close, when nothing was measured
        since the previous line, those of `set_postfix`), time taken and the time left."""
        elapsed = time.perf_counter() - self.started
        done = f"{self.n:,}"
        if self.total:
            done += f" of {self.total:,} {self.unit}s ({100 * self.n / self.total:.1f}%)"
        else:
            done += f" {self.unit}s"
        figures = self.measure() if self.measure else self.figures
        figures = figures or (self.figures if closing else {})
        parts = [done, *(f"{k} {v}" for k, v in figures.items()), minutes(elapsed)]
        if self.total and self.n < self.total and elapsed > 0:
            if self.share:
                now, start = self.share(), self.share_at_start
                rate, left = (now - start) / elapsed, 1 - now
            else:
                rate, left = (self.n - self.initial) / elapsed, self.total - self.n
            if rate > 0:
                parts.append(f"ETA {minutes(left / rate)}")
        return f"{self.desc}: " + ", ".join(parts)

    def close(self) -> None:
        """The last line, for work that took long enough to have shown one."""
        if self.lines and time.perf_counter() - self.started >= interval():
            self.print(closing=True)
        self.lines = False
        self.bar.close()


LONG_RUN = 600.0  # seconds: a CPU run expected to take longer is announced with its estimate
MEASURED_STEPS, MEASURED_SECONDS = 10, 5.0  # the rate is measured over this much work


class Forecast:
    """One line on stderr, once a short measured rate says the work will take longer than
    LONG_RUN: how long, and what to do for a quicker first try. The first step (warm-up)
    is left out of the measure."""

    def __init__(self, total: int, advice: str, enabled: bool = True):
        self.total, self.advice, self.enabled = total, advice, enabled
        self.first: tuple[int, float] | None = None

    def update(self, done: int) -> None:
        """`done` units of the total done so far."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.first is None:
            self.first = (done, now)
            return
        steps, seconds = done - self.first[0], now - self.first[1]
        if steps < MEASURED_STEPS or seconds < MEASURED_SECONDS:
            return
        self.enabled = False
        left = seconds / steps * (self.total - done)
        if left > LONG_RUN:
            print(
                f"bioknow: note: about {minutes(left)} to go at {steps / seconds:.2f} "
                f"steps/s on this CPU ({self.total - done:,} of {self.total:,} steps left); "
                f"{self.advice}",
                file=sys.stderr,
                flush=True,
            )
