"""Cross-checks of what a file says against what can be recomputed from what is sealed
(docs/design.md §9.2). A digest proves a file unchanged since it was recorded, not that its
numbers agree with each other: a manifest, config or report edited and re-sealed by hand
passes every digest. Each check here is cheap (no model, no pass over the data) and runs
whenever the file is read; a disagreement is an InputError naming the file and the
figure.
"""

import math
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bioknow.base import capacity
from bioknow.base.errors import InputError

# The settings of config.json the weights depend on; a checkpoint's state records them,
# so a config.json changed after training (its exposures, say) no longer matches.
TRAINED_WITH = (
    "data_manifest_sha256",
    "variant",
    "n",
    "exposures",
    "batch",
    "window",
    "seed",
    "junk",
    "useful_prefix",
    "model",
    "params",
    "steps",
    "tokens",
    "lr",
    "wd",
    "warmup",
    "betas",
    "eps",
    "min_lr_ratio",
    "precision",
)


def trained_with(config: dict) -> dict:
    """The settings a checkpoint records: those of TRAINED_WITH in the run's config."""
    return {key: config.get(key) for key in TRAINED_WITH}


# Before this version, a bioD run's junk and a bioD or bioR-style run's useful-data prefix
# were rendered as bioS text: such a run was trained on a stream bioknow no longer makes.
MIXTURES_FIXED = (0, 2, 1)


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def check_mixture(run: Path, config: dict) -> None:
    """Refuse a run whose junk or useful-data prefix an older bioknow rendered in the wrong
    format (bioS text for bioD or bioR-style data): its numbers would be of another stream."""
    variant, made = config.get("variant"), (config.get("versions") or {}).get("bioknow", "0")
    wrong = config.get("useful_prefix") is not None and variant in ("bioD", "bioR-style")
    wrong |= bool(config.get("junk")) and variant == "bioD"
    if wrong and version_tuple(made) < MIXTURES_FIXED:
        raise InputError(
            f"{run}: trained by bioknow {made}, which rendered its junk or useful-data prefix "
            f"as bioS text for {variant} data; train it again"
        )


def check_state(run: Path, config: dict, state: dict) -> None:
    """Refuse a config.json that differs from the settings its latest checkpoint was
    trained with, or a finished state short of the config's steps."""
    where = Path(run) / "config.json"
    for key, value in (state.get("trained_with") or {}).items():
        if config.get(key) != value:
            raise InputError(
                f"{where}: {key} is {config.get(key)!r}, but the run's checkpoint at step "
                f"{state['step']} was trained with {value!r} (changed after training)"
            )
    if state.get("finished") and state["step"] != config["steps"]:
        raise InputError(
            f"{where}: {config['steps']} steps, but the run finished at step {state['step']}"
        )


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def check_report(path: Path, report: dict, params: int) -> None:
    """Refuse an evaluation report whose R is not bits / P, whose P is not the run's,
    or (all N people evaluated) whose R exceeds Rmax: a perfect model's losses still
    give R <= Rmax over all N people (docs/design.md §7), so more is an edited file."""
    try:
        figures = {k: float(report[k]) for k in ("R", "bits", "R_max", "bits_max", "P")}
        everyone = report["people"] >= report["N"]
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path}: not an evaluation report (R, bits, P missing)") from None
    R, bits, P = figures["R"], figures["bits"], figures["P"]
    if P != params:
        raise InputError(f"{path}: P {P:.0f} is not the run's P {params}")
    if not close(R, bits / P) or not close(figures["R_max"], figures["bits_max"] / P):
        raise InputError(f"{path}: R {R:g} is not bits / P ({bits:g} / {P:.0f}); edited")
    if everyone and R > figures["R_max"] * (1 + 1e-9) + 1e-12:
        raise InputError(f"{path}: R {R:g} exceeds Rmax {figures['R_max']:g}; edited")


def parquet_rows(path: Path) -> int:
    """The rows of a parquet file, from its footer alone."""
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"{path}: not a readable parquet file ({e})") from None


def check_dataset(folder: Path, manifest: dict, fields) -> None:
    """Refuse a manifest whose N disagrees with population.parquet's rows (or, where
    every person is stored, with the renderings'), or whose N0, log2 S0 or Rmax bits
    disagree with its field lists."""
    folder, path = Path(folder), Path(folder) / "manifest.json"
    n = manifest["n"]
    if "population.parquet" in manifest["files"]:
        rows = parquet_rows(folder / "population.parquet")
        if rows != n:
            raise InputError(f"{path}: n is {n:,}, but population.parquet holds {rows:,} people")
    renderings = manifest.get("renderings") or {}
    shards = [f for f in manifest["files"] if f.startswith("renderings/")]
    stored = renderings.get("stored")
    if stored is not None and manifest["variant"] == "bioS-simple" and stored != n:
        raise InputError(f"{path}: n is {n:,}, but {stored:,} renderings are stored")
    if stored is not None and shards and manifest["variant"] != "bioR-style":
        rows = sum(parquet_rows(folder / f) for f in shards)
        if rows != stored:
            raise InputError(f"{path}: {stored:,} renderings listed, the shards hold {rows:,}")
    if manifest.get("n0") != fields.n0:
        raise InputError(f"{path}: n0 is {manifest.get('n0')}, its fields give {fields.n0}")
    if "log2_s0" in manifest:
        if not close(manifest["log2_s0"], fields.log2_s0):
            raise InputError(
                f"{path}: log2_s0 is {manifest['log2_s0']}, its fields give {fields.log2_s0}"
            )
        bits = capacity.bios_max_bits(n, fields.n0, fields.log2_s0)["total"]
        if not close(manifest["knowledge_bits"]["total"], bits):
            raise InputError(f"{path}: knowledge_bits differ from N, N0 and log2 S0 ({bits:g})")
