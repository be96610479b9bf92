"""The cost of verification: what checking a dataset's files adds to the commands that
read it, on bioS(1e6).

    python benchmarks/verify.py [--n 1e6] [--cores 1]

Generates bioS(N) (`bioknow generate bioS --n N --seed 0`, 1000 stored renderings), then
times: the manifest against manifest.sha256; the files eval, train and corpus read
(manifest, fields, tokenizer) against the manifest, beside the whole of opening the
dataset; every file (`bioknow info DIR --verify`); and SHA-256 per byte, which is what
checking a run's weights and optimizer state costs per byte. Prints a human summary,
then one JSON object as the last line, also written to docs/benchmarks/verify.json.
"""

import hashlib
import tempfile
import time
from pathlib import Path

from common import arguments, command_line, report

from bioknow.base import integrity
from bioknow.data import dataset


def best(fn, repeat: int = 5) -> float:
    """The fastest of a few timings of fn(), in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = command_line(__doc__)
    parser.add_argument("--n", type=float, default=1e6, help="people in the bioS dataset")
    args = arguments(parser)
    n = int(args.n)

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        dataset.generate("bioS", n, 0, data)
        manifest = dataset.read_manifest(data)
        used = [r for r in manifest["files"] if r.startswith("fields/") or r == "tokenizer.json"]
        size = sum(f["bytes"] for f in manifest["files"].values())

        seal_s = best(lambda: integrity.manifest_bytes(data))
        reader_s = best(lambda: dataset.check_files(data, dataset.read_manifest(data), used))
        everything_s = best(lambda: dataset.verify(data, dataset.read_manifest(data)))
        open_s = best(lambda: dataset.open_dataset(data).table, repeat=2)

    block = bytes(256 << 20)
    sha_s = best(lambda: hashlib.sha256(block).digest(), repeat=3)
    result = {
        "n": n,
        "dataset_mb": round(size / 1e6, 1),
        "manifest_seal_ms": round(seal_s * 1e3, 2),
        "reader_checks_ms": round(reader_s * 1e3, 2),
        "open_dataset_s": round(open_s, 3),
        "info_verify_s": round(everything_s, 3),
        "sha256_mb_per_s": round(len(block) / 1e6 / sha_s),
    }
    report(
        "verify",
        result,
        f"bioS(N={n:,}), {result['dataset_mb']} MB: the checks eval, train and corpus make "
        f"take {reader_s * 1e3:.1f} ms (opening the dataset: {open_s:.2f} s); every file "
        f"(info --verify) {everything_s:.2f} s; SHA-256 at {result['sha256_mb_per_s']} MB/s",
        args.out,
    )


if __name__ == "__main__":
    main()
