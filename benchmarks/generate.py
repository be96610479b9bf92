"""Generation speed: people/s (population + manifest) and renderings/s (bioS text).

    python benchmarks/generate.py [--n 1e6] [--renderings 100000] [--cores 1]

Prints a human summary, then one JSON object as the last line, also written to
docs/benchmarks/generate.json.
"""

import tempfile
import time
from pathlib import Path

import numpy as np
from common import arguments, command_line, report

from bioknow.data import dataset, fields
from bioknow.data.population import Population
from bioknow.data.render import render_people


def main() -> None:
    parser = command_line(__doc__)
    parser.add_argument("--n", type=float, default=1e6, help="people in the bioS dataset")
    parser.add_argument("--renderings", type=int, default=100_000, help="texts to render")
    args = arguments(parser)
    n = int(args.n)

    f = fields.load()
    start = time.perf_counter()
    population = Population.build(f, 0, n)
    population_s = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        dataset.generate("bioS", n, 0, Path(tmp) / "data", sample=0)
        generate_s = time.perf_counter() - start

    start = time.perf_counter()
    render_people(population, np.arange(min(args.renderings, n)), exposure=1)
    render_s = time.perf_counter() - start

    renderings = min(args.renderings, n)
    result = {
        "n": n,
        "people_per_s": round(n / population_s),
        "generate_bioS_s": round(generate_s, 3),
        "generate_people_per_s": round(n / generate_s),
        "renderings": renderings,
        "renderings_per_s": round(renderings / render_s),
        "cores": args.cores,
    }
    summary = (
        f"population of {n:,}: {population_s:.2f} s ({result['people_per_s']:,} people/s)\n"
        f"generate bioS({n:,}) with population.parquet and manifest: {generate_s:.2f} s\n"
        f"render {renderings:,} bioS texts: {render_s:.2f} s "
        f"({result['renderings_per_s']:,} renderings/s)"
    )
    report("generate", result, summary, args.out)


if __name__ == "__main__":
    main()
