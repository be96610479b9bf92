"""Evaluation speed: people evaluated per second for a model and N.

    python benchmarks/eval.py [--model gpt2-2-2] [--n 2000] [--batch 64] [--device cpu] [--compile]

Evaluates a model with random weights (speed does not depend on what it knows) on every
person of a bioS(N) dataset. Prints a summary, then one JSON object as the last line, also
written to docs/benchmarks/eval.json.
"""

import tempfile
import time
from pathlib import Path

import torch
from common import arguments, command_line, report

from bioknow.data import dataset
from bioknow.data.tokenizer import padded_vocab_size
from bioknow.measure import evaluate
from bioknow.training.model import ModelConfig, Transformer


def main() -> None:
    parser = command_line(__doc__, cores=None)
    parser.add_argument("--model", default="gpt2-2-2")
    parser.add_argument("--n", type=float, default=2000, help="people")
    parser.add_argument("--batch", type=int, default=64, help="biographies per batch")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile, static shapes")
    args = arguments(parser)
    n = int(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        dataset.generate("bioS", n, 0, Path(tmp) / "data", sample=0)
        ds = dataset.open_dataset(Path(tmp) / "data")
        cfg = ModelConfig.from_name(args.model, padded_vocab_size(ds.tokenizer))
        model = Transformer(cfg).to(args.device).eval()
        params = model.parameter_counts(ds.manifest["tokenizer"]["used_ids"])
        scorer = evaluate.model_scorer(model, args.compile)
        common = dict(batch=args.batch, device=args.device, static=args.compile)
        warm = None if args.compile else args.batch  # compiled: the same shape as timed
        evaluate.evaluate(scorer, ds, params, people=warm, **common)  # warm-up
        start = time.perf_counter()
        evaluate.evaluate(scorer, ds, params, **common)
        seconds = time.perf_counter() - start
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    result = {
        "model": args.model,
        "n": n,
        "batch": args.batch,
        "compile": args.compile,
        "device": device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "people_per_s": round(n / seconds, 1),
        "seconds": round(seconds, 3),
    }
    summary = (
        f"{args.model} on bioS({n:,}), {device}: {n / seconds:,.0f} people/s "
        f"({n / seconds * 60:,.0f} per minute)"
    )
    report("eval", result, summary, args.out)


if __name__ == "__main__":
    main()
