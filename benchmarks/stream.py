"""Training-stream speed: tokens/s of the bioS online stream on one CPU core.

    python benchmarks/stream.py [--n 1e5] [--batch 64] [--seconds 5] [--cores 1]

The stream assembles fresh renderings from pre-tokenized fragments, packs them into
512-token windows and yields [B, 512] batches. Prints a summary, then one JSON object
as the last line, also written to docs/benchmarks/stream.json.
"""

import time

import numpy as np
from common import arguments, command_line, report

from bioknow.data import fields, tokenizer
from bioknow.data.population import Population
from bioknow.data.render.tokens import FragmentTable
from bioknow.data.stream import JunkSource, MixedStream, TrainStream


def main() -> None:
    parser = command_line(__doc__)
    parser.add_argument("--n", type=float, default=1e5, help="people")
    parser.add_argument("--batch", type=int, default=64, help="windows per batch")
    parser.add_argument("--exposures", type=int, default=100, help="exposures of the run")
    parser.add_argument("--junk-fraction", type=float, default=0.0, help="share of junk windows")
    parser.add_argument("--junk-n", type=float, default=1e8, help="junk population N'")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to stream")
    args = arguments(parser)
    n = int(args.n)
    f = fields.load()
    table = FragmentTable(Population.build(f, 0, n), tokenizer.train(f))

    people = np.arange(min(n, 1 << 15))  # one stream chunk
    table.assemble(people, 0)  # warm up
    start = time.perf_counter()
    assembled = sum(len(table.assemble(people, e).tokens) for e in range(1, 21))
    assemble_rate = assembled / (time.perf_counter() - start)

    stream = TrainStream(table, args.exposures, args.batch, 0, online=True)
    if args.junk_fraction:
        people = Population.virtual(f, 1, int(args.junk_n))
        junk = JunkSource(FragmentTable(people, table.tokenizer))
        stream = MixedStream(stream, junk, args.junk_fraction)
    start = time.perf_counter()
    total = stream.total_tokens  # exact token count of the run, needed for the step count
    count_s = time.perf_counter() - start
    tokens, start = 0, time.perf_counter()
    for batch in stream.batches():
        tokens += batch.valid
        if time.perf_counter() - start > args.seconds:
            break
    seconds = time.perf_counter() - start

    result = {
        "variant": "bioS",
        "n": n,
        "batch": args.batch,
        "window": stream.window,
        "tokens_per_s": round(tokens / seconds),
        "assemble_tokens_per_s": round(assemble_rate),
        "count_tokens_s": round(count_s, 3),
        "exposures": args.exposures,
        "junk_fraction": args.junk_fraction,
        "cores": args.cores,
    }
    mixture = f" with {args.junk_fraction:g} junk" if args.junk_fraction else ""
    summary = (
        f"bioS({n:,}) training stream{mixture}, batch {args.batch} x {stream.window}, "
        f"{args.cores} core(s): {result['tokens_per_s'] / 1e6:.1f}M tokens/s "
        f"(assembly alone {assemble_rate / 1e6:.1f}M tokens/s); counting the "
        f"{total:,} tokens of {args.exposures} exposures took {count_s:.1f} s"
    )
    report("stream", result, summary, args.out)


if __name__ == "__main__":
    main()
