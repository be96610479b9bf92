"""What a sweep costs before it runs (`bioknow plan`): per point and in total, tokens,
training FLOPs, estimated wall time and device-hours, peak memory, and disk.

Tokens and steps come from the training stream itself (`bioknow.data.stream`, docs/design.md
§4) on the sweep's datasets, or, before they exist, on a sample of each, generated with
the same arguments: exact where the sample is the whole dataset (N <= SAMPLE_PEOPLE) and
every round is counted (online data up to EXACT_UNITS biographies), else N x exposures x
the mean tokens per exposure of the rounds counted. Training FLOPs are the model's own
count per token (`ModelConfig.flops_per_token`, the count MFU is measured with: 6 x the
matmul weights + the attention) times the tokens a run processes, useful and junk, as
train records them. Memory is train's own check (weights, gradients, AdamW moments and
logits, `train.state_memory`) plus a batch's activations.

The time model, stated in every plan: a point takes its training FLOPs over an achieved
rate, plus its evaluations (a forward pass, a third of a training step's FLOPs, over the
people evaluated) and a fixed start-up per command; the datasets are generated first, at
the rate of docs/benchmarks/generate.json. The achieved rate is that of the benchmarked
model nearest in FLOPs per token, from the measured figures committed under
docs/benchmarks/ (the CPU: train.json, one thread per run; a GPU: train-h100.json,
train-h200.json or train-a100.json, as scripts/gpu-check.sh writes them), else, on a GPU,
its peak dense bf16 rate times ASSUMED_MFU. With K devices the points are spread evenly.
"""

import dataclasses
import json
import math
import shutil
import tempfile
from pathlib import Path

from bioknow.base import validate
from bioknow.base.errors import InputError
from bioknow.data import dataset
from bioknow.data.stream import WINDOW, TrainStream, mixed_windows
from bioknow.data.tokenizer import padded_vocab_size
from bioknow.study import sweep
from bioknow.training import recipe
from bioknow.training.model import ModelConfig

PEAK_BF16 = {"h100": 989e12, "h200": 989e12, "a100": 312e12}  # dense, FLOP/s
DEVICE_MEMORY = {"h100": 80 * 10**9, "h200": 141 * 10**9, "a100": 80 * 10**9}
ASSUMED_MFU = 0.3
COMMAND_S = {"cpu": 6.0, "gpu": 30.0}  # one bioknow command's start: imports, tables, compile
SAMPLE_PEOPLE = 1000
EXACT_UNITS = 2 * 10**7  # biographies of an online stream counted, at most
ACTIVATION_BYTES = 34  # per layer, token and hidden unit (Korthikanti et al. 2022, bf16)
REPORT_BYTES = 16 * 2**10  # an evaluation or probe report with its share of the log
METRICS_LINE_BYTES = 200
PROBE_TOKENS = 5 * 4 * 16  # a person's questions and answers in a probe epoch, about
BENCHMARKS = Path(__file__).resolve().parent.parent.parent / "docs" / "benchmarks"


def benchmark_file(device: str) -> Path:
    return BENCHMARKS / ("train.json" if device == "cpu" else f"train-{device}.json")


def measured_rates(device: str) -> list[tuple[str, int, float]] | None:
    """(model, FLOPs per token, achieved FLOP/s) of each model benchmarked on the device,
    the fastest variant of bioknow's own step; None when the device has no figures."""
    path = benchmark_file(device)
    if not path.is_file():
        return None
    try:
        reports = json.loads(path.read_text())
        rates = []
        for run in (r for report in _listed(reports) for r in report["runs"]):
            speeds = [
                v["tokens_per_s"]
                for k, v in run.items()
                if isinstance(v, dict) and not k.startswith(("transformers", "head"))
            ]
            per_token = run["flops_per_token"]
            rates.append((run["model"], per_token, max(speeds) * per_token))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not a training benchmark bioknow can read ({e!r})") from None
    if not rates or not all(rate > 0 for *_, rate in rates):
        raise InputError(f"{path}: holds no positive tokens/s")
    return rates


def _listed(value) -> list:
    return value if isinstance(value, list) else [value]


def time_model(device: str) -> dict:
    """How time is estimated on a device: its measured figures, else (a GPU) peak x
    ASSUMED_MFU; `text` says which."""
    rates = measured_rates(device)
    kind = "cpu" if device == "cpu" else "gpu"
    if rates is not None:
        name = benchmark_file(device).name
        text = f"measured tokens/s of the nearest benchmarked model (docs/benchmarks/{name})"
    elif device == "cpu":
        raise InputError(f"{benchmark_file(device)}: missing; the CPU plan is calibrated on it")
    else:
        peak = PEAK_BF16[device] / 1e12
        text = f"peak bf16 {peak:.0f} TFLOP/s x assumed utilization {ASSUMED_MFU}"
    text += f", {COMMAND_S[kind]:.0f} s start-up per command"
    return {"device": device, "rates": rates, "text": text, "command_s": COMMAND_S[kind]}


def flop_rate(model: dict, per_token: int) -> float:
    """Achieved FLOP/s for a model of `per_token` FLOPs per token."""
    if model["rates"] is None:
        return PEAK_BF16[model["device"]] * ASSUMED_MFU
    nearest = min(model["rates"], key=lambda r: abs(math.log(r[1] / per_token)))
    return nearest[2]


def generate_rate() -> float | None:
    """People per second of `generate` (docs/benchmarks/generate.json), if measured."""
    path = BENCHMARKS / "generate.json"
    try:
        return float(json.loads(path.read_text())["generate_people_per_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def open_datasets(grid: list, folder: Path | None, scratch: Path) -> dict:
    """Each dataset of the grid: the sweep's own (`folder`/ID) where it exists, else a
    sample of min(N, SAMPLE_PEOPLE) people generated in `scratch` with the same arguments
    (once for datasets whose samples are the same); with N over the people it holds, and
    its bytes scaled to N."""
    out, samples = {}, {}
    for data_id, data in {p.data_id: p.data for p in grid}.items():
        path = folder / data_id if folder is not None else None
        if path is None or not (path / "manifest.json").is_file():
            sample = {**data, "n": min(data["n"], SAMPLE_PEOPLE)}
            key = json.dumps(sample, sort_keys=True)
            if key not in samples:
                samples[key] = scratch / str(len(samples))
                sweep.generate_dataset(sample, samples[key])
            path = samples[key]
        ds = dataset.open_dataset(path)
        scale = data["n"] / ds.manifest["n"]
        files = ds.manifest["files"]
        people = sum(f["bytes"] for k, f in files.items() if k == "population.parquet")
        rest = sum(f["bytes"] for k, f in files.items() if k != "population.parquet")
        out[data_id] = (ds, scale, round(people * scale + rest))
    return out


def useful_tokens(table, ds, scale: float, exposures: int, seed: int, memo: dict):
    """A run's useful tokens, and whether the count is exact: every round counted on the
    whole dataset, else the mean of the rounds counted on the sample, scaled. `memo`
    keeps the counts that points share."""
    n = len(table.population)
    rounds = exposures if not ds.online else max(1, min(exposures, EXACT_UNITS // n))
    key = (str(ds.path), id(table), rounds, seed)
    if key not in memo:
        memo[key] = TrainStream(table, rounds, 1, seed, ds.online).total_tokens
    counted = memo[key]
    if rounds == exposures and scale == 1:
        return counted, True
    return round(counted / rounds * exposures * scale), False


def point_plan(point, config: dict, opened: tuple, model: dict, gpus_per_point: int, memo) -> dict:
    """One point's figures: tokens, steps, FLOPs, seconds, memory and disk. `memo` keeps
    the tables and token counts that points share."""
    from bioknow.training import train

    ds, scale, _ = opened
    n, exposures = point.data["n"], point.exposures
    options = config["train"]
    given = {k: point.recipe[k] for k in ("lr", "wd", "batch") if k in point.recipe}
    batch = dataclasses.replace(recipe.default(n, exposures), **given).batch
    prefix = options.get("useful_prefix")
    if (str(ds.path), prefix) not in memo:
        memo[str(ds.path), prefix] = train.run_table({"useful_prefix": prefix}, ds)
    table = memo[str(ds.path), prefix]
    useful, exact = useful_tokens(table, ds, scale, exposures, point.seed, memo)
    fraction = options.get("junk_fraction") or 0.0
    windows = mixed_windows(useful, fraction) if fraction else math.ceil(useful / WINDOW)
    junk = WINDOW * math.floor(windows * fraction) if fraction else 0
    steps = math.ceil(windows / batch) if fraction else math.ceil(useful / (batch * WINDOW))
    cfg = ModelConfig.from_name(point.model, padded_vocab_size(table.tokenizer))
    per_token = cfg.flops_per_token(WINDOW)
    flops = per_token * (useful + junk)
    rate = flop_rate(model, per_token)
    people = config["eval"].get("people")
    evaluated = n if people in (None, "all") else min(n, people)
    settings = sweep.quantize_settings(config)
    eval_flops = len(settings) * evaluated * useful / (exposures * n) * per_token / 3
    probe = config["probe"]
    probe_flops = 0
    if probe is not None:
        people = min(n, probe.get("people") or n)
        epochs = probe.get("epochs", validate.PROBE_DEFAULTS["epochs"])
        probe_flops = epochs * people * PROBE_TOKENS * per_token
    commands = 1 + len(settings) + (probe is not None)
    seconds = (flops / gpus_per_point + eval_flops + probe_flops) / rate
    seconds += commands * model["command_s"]
    rows = math.ceil(batch / gpus_per_point)
    activations = ACTIVATION_BYTES * cfg.n_layer * cfg.d_model * rows * WINDOW
    total_params = parameters(cfg)
    log_every = options.get("log_every", 50)
    reports = (commands - 1) * REPORT_BYTES + math.ceil(steps / log_every) * METRICS_LINE_BYTES
    return {
        "point": point.id,
        "variant": point.data["variant"],
        "n": n,
        "exposures": exposures,
        "model": point.model,
        "batch": batch,
        "steps": steps,
        "tokens": useful,
        "junk_tokens": junk,
        "exact": exact,
        "flops_per_token": per_token,
        "flops": flops,
        "seconds": seconds,
        "device_hours": seconds * gpus_per_point / 3600,
        "memory_bytes": train.state_memory(cfg, rows) + activations,
        "params_total": total_params,
        "checkpoint_bytes": 16 * total_params,  # final float32 weights + a checkpoint
        "report_bytes": reports,
    }


def parameters(cfg: ModelConfig) -> int:
    """The model's parameters, counted on a model that holds no memory."""
    import torch

    from bioknow.training.model import Transformer

    with torch.device("meta"):
        return Transformer(cfg).parameter_counts(0)["total"]


def plan(config_path, device: str = "h100", gpus: int = 1, data=None) -> dict:
    """The plan of a sweep config (a file or a mapping) on `gpus` devices of a kind (on
    the CPU: runs at once, one thread each); `data`: a sweep's data folder whose datasets
    are counted where they exist."""
    checked = validate.check(validate.PLAN, {"device": device, "gpus": gpus}, "--")
    device, gpus = checked["device"], checked["gpus"]
    raw = sweep.load_config(config_path)
    grid = sweep.points(raw)
    config = sweep.check_config(raw)
    per_point = config["gpus_per_point"] if device != "cpu" else 1
    if gpus % per_point:
        raise InputError(f"--gpus {gpus}: not a multiple of gpus_per_point {per_point}")
    model = time_model(device)
    memory = DEVICE_MEMORY.get(device) or validate.memory("cpu")
    scratch = Path(tempfile.mkdtemp(prefix=".bioknow-plan-"))
    try:
        opened = open_datasets(grid, Path(data) if data else None, scratch)
        memo: dict = {}
        points = [point_plan(p, config, opened[p.data_id], model, per_point, memo) for p in grid]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rate = generate_rate()
    datasets = [
        {
            "id": data_id,
            "n": grid_n,
            "bytes": opened[data_id][2],
            "generate_s": grid_n / rate if rate else None,
        }
        for data_id, grid_n in {p.data_id: p.data["n"] for p in grid}.items()
    ]
    for p in points:
        p["fits"] = p["memory_bytes"] <= memory
    return {
        "config": str(config_path) if not isinstance(config_path, dict) else None,
        "device": device,
        "gpus": gpus,
        "gpus_per_point": per_point,
        "device_memory_bytes": memory,
        "time_model": model["text"],
        "points": points,
        "datasets": datasets,
        "total": totals(points, datasets, gpus // per_point),
    }


def totals(points: list[dict], datasets: list[dict], slots: int) -> dict:
    """The sweep's totals: points spread evenly over the slots (none shorter than the
    longest point), after the datasets are generated."""
    seconds = [p["seconds"] for p in points]
    generate_s = sum(d["generate_s"] or 0 for d in datasets)
    disk = {
        "datasets": sum(d["bytes"] for d in datasets),
        "checkpoints": sum(p["checkpoint_bytes"] for p in points),
        "reports": sum(p["report_bytes"] for p in points),
    }
    return {
        "points": len(points),
        "tokens": sum(p["tokens"] + p["junk_tokens"] for p in points),
        "flops": sum(p["flops"] for p in points),
        "seconds": generate_s + max(sum(seconds) / slots, max(seconds)),
        "device_hours": sum(p["device_hours"] for p in points),
        "peak_memory_bytes": max(p["memory_bytes"] for p in points),
        "points_not_fitting": sum(not p["fits"] for p in points),
        "exact": all(p["exact"] for p in points),
        "disk_bytes": {**disk, "total": sum(disk.values())},
    }


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 4 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def size(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def short(result: dict) -> str:
    """The plan in two lines (what `bioknow sweep` prints as it starts)."""
    t = result["total"]
    kind = result["device"].upper() if result["device"] != "cpu" else "CPU run(s) at once"
    where = f"{result['gpus']} {kind}"
    approx = "" if t["exact"] else "about "
    lines = [
        f"plan: {t['points']} points, {approx}{t['tokens']:.3g} tokens, {t['flops']:.3g} "
        f"training FLOPs; about {duration(t['seconds'])} on {where} "
        f"({t['device_hours']:.3g} device-hours), peak memory {size(t['peak_memory_bytes'])} "
        f"a point, disk {size(t['disk_bytes']['total'])}",
        f"  time model: {result['time_model']}",
    ]
    if t["points_not_fitting"]:
        lines.append(
            f"  {t['points_not_fitting']} point(s) need more than the device's "
            f"{size(result['device_memory_bytes'])}"
        )
    return "\n".join(lines)


def table(result: dict) -> str:
    """The plan for people: one line per point, then the totals."""
    head = f"{'point':<58} {'tokens':>9} {'FLOPs':>9} {'time':>9} {'dev-h':>8} {'memory':>9}"
    lines = [head]
    for p in result["points"]:
        mark = "" if p["exact"] else "~"
        fits = "" if p["fits"] else "  DOES NOT FIT"
        lines.append(
            f"{p['point']:<58} {mark + format(p['tokens'] + p['junk_tokens'], '.3g'):>9} "
            f"{p['flops']:>9.3g} {duration(p['seconds']):>9} {p['device_hours']:>8.3g} "
            f"{size(p['memory_bytes']):>9}{fits}"
        )
    disk = result["total"]["disk_bytes"]
    lines.append(
        f"disk: datasets {size(disk['datasets'])}, checkpoints {size(disk['checkpoints'])}, "
        f"reports {size(disk['reports'])}"
    )
    lines.append("(~: estimated from a sample of the dataset; the others are exact)")
    return "\n".join([*lines, short(result)])


def here(device: str | None, cpu_slots: int, launcher) -> tuple[str, int, str]:
    """The device kind and count a sweep starting here will run on, and a note when it
    is assumed (a Slurm job's GPUs, a GPU of no known kind)."""
    if launcher is not None:
        cpu = device == "cpu" or launcher.gpus_per_job == 0
        assumed = " (the GPUs of Slurm jobs: one H100 assumed)"
        return ("cpu", cpu_slots, "") if cpu else ("h100", 1, assumed)
    gpus = [] if device == "cpu" else sweep.visible_gpus()
    if not gpus:
        return "cpu", cpu_slots, ""
    import torch

    name = torch.cuda.get_device_name(0).lower()
    kind = next((k for k in PEAK_BF16 if k in name), None)
    return kind or "h100", len(gpus), "" if kind else f" ({name}: figures of an H100)"
