"""A sweep config rehearsed on the CPU (`bioknow sweep CONFIG --rehearse`): the same grid
shrunk to tiny N, exposures and models, run end to end through generate, train, eval
(quantized where the config says), plot and fit, so that a config that would fail on a
cluster fails here first, in about a minute.

The shrinking rule (every list collapses; points that become equal are run once):
- every dataset keeps its variant and seed, with N = REHEARSAL_N people, the default
  BPE at its smallest vocabulary (320), bioR-style 2 renderings a person, and bioD's
  shape cut to K <= 2, C <= 2, L <= 2, T <= 16, D <= min(8, T^L);
- every model family keeps one model, its smallest: FAMILY-1-1;
- exposures become REHEARSAL_EXPOSURES, seeds the first, the recipe grid its first
  combination with the batch at most 8;
- train options are kept (junk fraction, junk N', useful-data prefix, ...) but the
  device (the CPU here) and the GPUs a point;
- quantizations are kept; evaluation and probe samples become at most 20 people, the
  probe one epoch.
"""

from pathlib import Path

from bioknow import fit, plot, sweep
from bioknow.model import ModelConfig

REHEARSAL_N = 40
REHEARSAL_EXPOSURES = 2
MAX_BATCH = 8
MAX_PEOPLE = 20
BIOD_CAPS = {"k": 2, "c": 2, "l": 2, "t": 16, "d": 8}


def shrink_dataset(data: dict) -> dict:
    """A checked dataset of the grid, tiny."""
    out = {"variant": data["variant"], "n": REHEARSAL_N, "seed": data.get("seed", 0)}
    out["vocab_size"] = 320
    if data["variant"] == "bioR-style":
        out["renderings"] = min(data.get("renderings", 2), 2)
    if data["variant"] == "bioD":
        small = {k: min(data[k], cap) for k, cap in BIOD_CAPS.items()}
        small["d"] = min(small["d"], small["t"] ** small["l"])
        out.update(small)
    return out


def shrink(raw: dict) -> dict:
    """The config's grid shrunk by the rule above (the config is checked first)."""
    checked = sweep.check_config(raw)
    datasets = []
    for data in map(shrink_dataset, checked["datasets"]):
        if data not in datasets:
            datasets.append(data)
    families = dict.fromkeys(ModelConfig.from_name(m, 64).family for m in checked["models"])
    recipe = dict(checked["recipe"][0])
    if "batch" in recipe:
        recipe["batch"] = min(recipe["batch"], MAX_BATCH)
    train = {k: v for k, v in checked["train"].items() if k != "device"}
    out = {
        "datasets": datasets,
        "models": [f"{family}-1-1" for family in families],
        "exposures": [REHEARSAL_EXPOSURES],
        "seeds": checked["seeds"][:1],
        "quantize": checked["quantize"],
        "train": train,
    }
    if recipe:
        out["recipe"] = recipe
    people = checked["eval"].get("people")
    if people is not None:
        out["eval"] = {"people": people if people == "all" else min(people, MAX_PEOPLE)}
    if checked["probe"] is not None:
        out["probe"] = {**checked["probe"], "epochs": 1}
        out["probe"]["people"] = min(checked["probe"].get("people", MAX_PEOPLE), MAX_PEOPLE)
    return out


def plot_kinds(config: dict) -> list[str]:
    """The figures worth drawing for a grid: capacity, and each factor it varies."""
    kinds = ["capacity"]
    kinds += ["exposures"] if len(config["exposures"]) > 1 else []
    kinds += ["architecture"] if len(config["models"]) > 1 else []
    kinds += ["quantized"] if len(sweep.quantize_settings(config)) > 1 else []
    return kinds


def rehearse(config_path, out, progress: bool = False) -> list[dict]:
    """Run the shrunk grid of `config_path` in `out` on the CPU (as many runs at once as
    there are cores, one thread each), then draw its figures (`out`/KIND.png) and fit it
    (`out`/fit.json, report.md); the result rows."""
    small = shrink(sweep.load_config(config_path))
    slots = sweep.cpu_threads(1)
    rows = sweep.run_sweep(small, out, device="cpu", cpu_slots=slots, progress=progress)
    if all(r["status"] == "done" for r in rows):
        for kind in plot_kinds(small):
            try:
                plot.plot(out, Path(out) / f"{kind}.png", kind=kind)
            except plot.NothingToCompare:
                pass
        fit.fit_all(out)
    return rows
