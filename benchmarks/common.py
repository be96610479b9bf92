"""What every benchmark shares: pinning to cores, and reporting its figures."""

import datetime
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"


def pin(cores: int) -> None:
    """Run on the first `cores` CPU cores only (Linux), so figures are per core."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(range(cores)))


def report(name: str, result: dict, summary: str, out: str | None = None) -> None:
    """Print the summary, then the result (with the environment) as one JSON line, also
    written to docs/benchmarks/NAME.json (or `out`)."""
    result = {
        "benchmark": name,
        **result,
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "date": datetime.date.today().isoformat(),
        "command": "python " + " ".join(sys.argv),
    }
    path = Path(out) if out else DOCS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(summary)
    print(json.dumps(result), flush=True)
