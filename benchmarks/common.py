"""What every benchmark shares: its common options (--cores, --out), pinning to cores,
and reporting its figures."""

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"


def command_line(doc: str, cores: int | None = 1) -> argparse.ArgumentParser:
    """A benchmark's parser (described by the first line of `doc`) with the options every
    benchmark takes: --cores (default `cores`; None: all) and --out. Parse it with
    `arguments`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    default = "all" if cores is None else cores
    parser.add_argument(
        "--cores", type=int, default=cores, help=f"CPU cores to use (default {default})"
    )
    parser.add_argument("--out", help="JSON file (default: docs/benchmarks/NAME.json)")
    return parser


def arguments(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The parsed command line, the process pinned to --cores."""
    args = parser.parse_args()
    if args.cores:
        pin(args.cores)
    return args


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
