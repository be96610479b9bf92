"""Make the real sweep tables the fit and plot tests read: tests/data/NAME.parquet.

    python tests/data/make_tables.py short one-model families biod  # run these grids
    python tests/data/make_tables.py example --from out/sweep-cpu  # take a finished sweep

Each NAME is a grid in tests/data/grids/ (`example` is scripts/sweep-cpu.yaml, the README's
example). The grid is run with `bioknow sweep` in a temporary folder and its runs.parquet
is copied here, with the dataset and run paths in each row made relative to the sweep.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent.parent / "scripts" / "sweep-cpu.yaml"


def grid(name: str) -> Path:
    return EXAMPLE if name == "example" else HERE / "grids" / f"{name}.yaml"


def relative_config(text: str | None) -> str | None:
    """A row's config with its dataset path relative to the sweep folder (a sweep keeps
    its datasets in DIR/data/ID)."""
    if text is None:
        return None
    config = json.loads(text)
    config["data"] = f"data/{Path(config['data']).name}"
    return json.dumps(config)


def relative_run(path: str | None) -> str | None:
    """A run folder's path relative to the sweep folder (DIR/runs/ID)."""
    return None if path is None else f"runs/{Path(path).name}"


def keep(sweep: Path, name: str) -> Path:
    """Copy SWEEP/runs.parquet to tests/data/NAME.parquet, paths made relative."""
    table = pq.read_table(sweep / "runs.parquet")
    for column, relative in (("config", relative_config), ("run", relative_run)):
        if column in table.column_names:
            values = [relative(v) for v in table.column(column).to_pylist()]
            index = table.column_names.index(column)
            table = table.set_column(index, column, pa.array(values, pa.string()))
    out = HERE / f"{name}.parquet"
    pq.write_table(table, out)
    return out


def run(name: str) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(grid(name), Path(tmp) / "grid.yaml")
        command = [sys.executable, "-m", "bioknow", "sweep", "grid.yaml", "--out", "s"]
        subprocess.run(command, cwd=tmp, check=True)
        return keep(Path(tmp) / "s", name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="grids to run (tests/data/grids/NAME.yaml)")
    parser.add_argument("--from", dest="source", help="a finished sweep of the (one) grid")
    args = parser.parse_args()
    for name in args.names:
        out = keep(Path(args.source), name) if args.source else run(name)
        print(f"wrote {out} ({pq.read_metadata(out).num_rows} rows)")


if __name__ == "__main__":
    main()
