"""A sweep config rehearsed on the CPU (`bioknow sweep CONFIG --rehearse`): the same grid
shrunk to tiny N, exposures and models, run end to end through generate, train, eval
(quantized where the config says), plot and fit, so that a config that would fail on a
cluster fails here first.

The shrinking rule (every list collapses; points that become equal are run once):
- every dataset keeps its variant and seed, with N = REHEARSAL_N people, the default
  BPE at its smallest vocabulary (320), bioR-style 2 renderings a person, and bioD the
  shape K = 2, C = 2, D = 8, L = 2, T = 16 (the full config is checked first, so its
  real sizes are refused here if they would be refused on the cluster);
- every model family keeps one model, its smallest: FAMILY-1-1;
- exposures become REHEARSAL_EXPOSURES, seeds the first, the recipe grid its first
  combination, with a batch of at most MAX_BATCH windows (the recipe's rule would shrink
  the batch of so small a run to 1 and keep the paper's thousand-odd steps);
- train options are kept (junk fraction, junk N', useful-data prefix, ...) but the
  device (the CPU here) and the GPUs a point;
- quantizations are kept; evaluation and probe samples become at most 20 people, the
  probe one epoch.

The points run one at a time, each command (`bioknow train`, `bioknow eval`, ...) with
the arguments a sweep gives it, in this process rather than a child of its own (a tiny
run's work is shorter than a child's start-up); the log of each point holds its output.
"""

from pathlib import Path

from bioknow.study import fit, plot, sweep
from bioknow.training.model import ModelConfig

REHEARSAL_N = 40
REHEARSAL_EXPOSURES = 2
MAX_BATCH = 8
MAX_PEOPLE = 20
BIOD_SHAPE = {"k": 2, "c": 2, "d": 8, "l": 2, "t": 16}


def shrink_dataset(data: dict) -> dict:
    """A checked dataset of the grid, tiny."""
    out = {"variant": data["variant"], "n": REHEARSAL_N, "seed": data.get("seed", 0)}
    out["vocab_size"] = 320
    if data["variant"] == "bioR-style":
        out["renderings"] = min(data.get("renderings", 2), 2)
    if data["variant"] == "bioD":
        out.update(BIOD_SHAPE)
    return out


def shrink(raw: dict) -> dict:
    """The config's grid shrunk by the rule above (the config is checked first, but for
    its train device: a GPU's is no concern of a rehearsal on the CPU)."""
    train = {k: v for k, v in (raw.get("train") or {}).items() if k != "device"}
    checked = sweep.check_config({**raw, "train": train})
    datasets = []
    for data in map(shrink_dataset, checked["datasets"]):
        if data not in datasets:
            datasets.append(data)
    families = dict.fromkeys(ModelConfig.from_name(m, 64).family for m in checked["models"])
    recipe = {
        **checked["recipe"][0],
        "batch": min(checked["recipe"][0].get("batch", MAX_BATCH), MAX_BATCH),
    }
    out = {
        "datasets": datasets,
        "models": [f"{family}-1-1" for family in families],
        "exposures": [REHEARSAL_EXPOSURES],
        "seeds": checked["seeds"][:1],
        "quantize": checked["quantize"],
        "train": checked["train"],
        "recipe": recipe,
    }
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


def rehearse(config_path, out, children) -> list[dict]:
    """Run the shrunk grid of `config_path` in `out` on the CPU, then draw its figures
    (`out`/KIND.png) and fit it (`out`/fit.json, report.md); the result rows. `children`
    runs the sweep's commands (`bioknow.cli.InProcess`: in this process)."""
    import torch

    small = shrink(sweep.load_config(config_path))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models run fastest on one thread
    try:
        rows = sweep.run_sweep(small, out, device="cpu", children=children)
    finally:
        torch.set_num_threads(threads)
    if all(r["status"] == "done" for r in rows):
        for kind in plot_kinds(small):
            try:
                plot.plot(out, Path(out) / f"{kind}.png", kind=kind)
            except plot.NothingToCompare:
                pass
        fit.fit_all(out)
    return rows
