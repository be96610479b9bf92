"""Sweeps: a grid of datasets x models x exposures x recipes x seeds, trained and evaluated.

    DIR/sweep.json           the resolved grid (what each point is)
    DIR/bioknow-folder.json  what the folder is: a sweep (`bioknow.base.ownership`)
    DIR/data/ID/             datasets, shared by the runs that use them
    DIR/runs/ID/             one run folder per point (train, eval*.json, probe*.json)
    DIR/logs/ID.log          what the point's commands printed
    DIR/runs.parquet, .csv   one row per (point, quantization): every eval field, the
                             resolved config, wall time and tokens/s

Each point runs `bioknow train`, `bioknow eval` (and `bioknow probe`, with `probe:` in the
config) as subprocesses, so a failure stays in
its point and GPUs are placed with CUDA_VISIBLE_DEVICES: one slot per GPU (or `per_gpu`
slots sharing one), or `cpu_slots` on the CPU, each with an equal share of its cores
(tiny models use two cores poorly: two one-core runs at once get more done than one
two-core run); the costliest points start first. The children die with the sweep
(Linux's parent-death signal, `bioknow.base.process`). Every value of the config is checked by
the rules of the command it goes to (`bioknow.base.validate`) before anything is written.
Running the sweep again skips finished points, resumes interrupted ones, and tries failed
ones again; a point that fails twice in a row is reported as failed. A point may train on
several GPUs (`gpus_per_point`: torchrun and DDP in its slot). The points run on this
machine, or through a launcher elsewhere (`bioknow.study.slurm`: a Slurm job array).
"""

import itertools
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bioknow.base import atomic, consistency, integrity, ownership, process, validate
from bioknow.base.errors import InputError
from bioknow.base.progress import Progress
from bioknow.data import dataset
from bioknow.measure.evaluate import mean_accuracy
from bioknow.study import configfile
from bioknow.study.grid import MAX_POINTS, check_size, count_points
from bioknow.training import runfolder, track
from bioknow.training.model import ModelConfig

DATASET_KEYS = {"variant", "n", "seed", "k", "c", "d", "l", "t", "renderings", "vocab_size"}
DATASET_KEYS |= set(dataset.RANDOM_KEYS)  # random: length, symbols
GENERATE_EXTRA = ("renderings", "vocab_size", *dataset.RANDOM_KEYS)  # generate's own keywords
RECIPE_KEYS = {"lr", "wd", "batch", "warmup"}
TOP_KEYS = {
    "datasets",
    "models",
    "exposures",
    "seeds",
    "recipe",
    "quantize",
    "eval",
    "train",
    "tracker",
    "probe",
    "gpus_per_point",
}
TRAIN_KEYS = {
    "device",
    "no_compile",
    "cuda_graphs",
    "precision",
    "junk_fraction",
    "junk_n",
    "useful_prefix",
    "log_every",
    "checkpoint_every",
    "tracker",
}
EVAL_KEYS = {"people"}
ATTEMPTS = 2


@dataclass
class Point:
    """One run of the grid."""

    id: str
    data: dict  # generate arguments: variant, n, seed
    model: str
    exposures: int
    seed: int
    recipe: dict = field(default_factory=dict)

    @property
    def data_id(self) -> str:
        extra = "".join(
            f"-{k}{self.data[k]}" for k in sorted(self.data) if k not in ("variant", "n", "seed")
        )
        return f"{self.data['variant']}-n{self.data['n']}-s{self.data.get('seed', 0)}{extra}"


def _mapping(value, where: str) -> dict:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise InputError(f"sweep config: {where} must be a mapping of names to values")
    return value


def _grid(spec: dict, keys: set[str], where: str) -> list[dict]:
    """Expand a mapping whose values may be lists into every combination."""
    unknown = set(_mapping(spec, where)) - keys
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    names = sorted(spec)
    values = [v if isinstance(v, list) else [v] for v in (spec[k] for k in names)]
    for name, options in zip(names, values, strict=True):
        if not options:
            raise InputError(f"sweep config: {where}.{name} is an empty list")
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


def _listed(config: dict, key: str, default=None) -> list:
    value = config.get(key, default)
    if value is None:
        raise InputError(f"sweep config: {key!r} is required")
    value = value if isinstance(value, list) else [value]
    if not value:
        raise InputError(f"sweep config: {key!r} is an empty list")
    return value


def _value(rule, value, name: str):
    """A config value checked by a command's rule; null is refused, never 'not given'."""
    if value is None:
        raise InputError(f"sweep config: {name} is null")
    return rule(value, f"sweep config: {name}")


def _dataset(spec: dict) -> dict:
    """A dataset of the grid, checked as generate checks its arguments."""
    if "variant" not in spec or "n" not in spec:
        raise InputError("sweep config: every dataset needs variant and n")
    rules = {**validate.GENERATE, "variant": validate.Choice(tuple(dataset.VARIANTS))}
    data = {k: _value(rules[k], v, f"datasets.{k}") for k, v in spec.items()}
    biod = {k: data[k] for k in dataset.BIOD_KEYS if k in data} or None
    args = {k: data[k] for k in ("n", "seed", *GENERATE_EXTRA) if k in data}
    dataset.check_arguments(data["variant"], {**args, "sample": 0}, biod, None)
    return data


def train_section(config: dict) -> dict:
    """The config's `train:` options, with a top-level `tracker:` among them."""
    train = _mapping(config.get("train") or {}, "train")
    if "tracker" not in config:
        return train
    if train.get("tracker", config["tracker"]) != config["tracker"]:
        raise InputError("sweep config: tracker and train.tracker differ (give one)")
    return {**train, "tracker": config["tracker"]}


def check_config(config: dict) -> dict:
    """The config with every value checked by the rules of the command it goes to: no
    empty lists, no nulls, whole numbers whole, every model name known."""
    train = train_section(config)
    evaluation = _mapping(config.get("eval") or {}, "eval")
    for where, part, keys in (("train", train, TRAIN_KEYS), ("eval", evaluation, EVAL_KEYS)):
        if set(part) - keys:
            raise InputError(f"{where}: unknown key(s) {', '.join(sorted(set(part) - keys))}")
    rules = {**validate.TRAIN, "no_compile": validate.Flag()}
    datasets = [_grid(spec, DATASET_KEYS, "datasets") for spec in _listed(config, "datasets")]
    checked = {
        "datasets": [_dataset(d) for grid in datasets for d in grid],
        "models": [_value(validate.Text(), m, "models") for m in _listed(config, "models")],
        "exposures": [
            _value(rules["exposures"], e, "exposures") for e in _listed(config, "exposures")
        ],
        "seeds": [_value(validate.SEED, s, "seeds") for s in _listed(config, "seeds", [0])],
        "recipe": [
            {k: _value(rules[k], v, f"recipe.{k}") for k, v in rec.items()}
            for rec in _grid(config.get("recipe") or {}, RECIPE_KEYS, "recipe")
        ],
        "train": {k: _value(rules[k], v, f"train.{k}") for k, v in train.items()},
        "eval": {k: _value(validate.People(), v, f"eval.{k}") for k, v in evaluation.items()},
        "quantize": [
            _value(validate.EVAL["quantize"], q, "quantize")
            for q in _listed(config, "quantize", ["none"])
        ],
        "probe": probe_section(config.get("probe", False)),
        "gpus_per_point": _value(validate.GPUS, config.get("gpus_per_point", 1), "gpus_per_point"),
    }
    for model in checked["models"]:
        ModelConfig.from_name(model, 64)  # a misspelt model fails before anything runs
    track.check(checked["train"].get("tracker"))
    if checked["train"].get("tracker") == "wandb":
        track.wandb_credentials()
    return checked


def probe_section(value) -> dict | None:
    """`probe:` true (the probe's defaults), false, or a mapping of probe options (people,
    seed, epochs, batch, rank, embedding_rank): the options, or None for no probe."""
    if value is True or value is False:
        return {} if value else None
    rules = {k: v for k, v in validate.PROBE.items() if k != "device"}
    spec = _mapping(value, "probe (true, false, or a mapping of probe options)")
    unknown = set(spec) - set(rules)
    if unknown:
        raise InputError(f"probe: unknown key(s) {', '.join(sorted(unknown))}")
    return {k: _value(rules[k], v, f"probe.{k}") for k, v in spec.items()}


def load_config(path) -> dict:
    """A grid from a YAML or JSON file (JSON is YAML), or given as a mapping, checked."""
    if isinstance(path, dict):
        config, path = path, "sweep config"
    else:
        config = configfile.load(path)
    if not isinstance(config, dict):
        raise InputError(f"{path}: a sweep config is a mapping (datasets, models, exposures, ...)")
    unknown = set(config) - TOP_KEYS
    if unknown:
        raise InputError(f"{path}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    return config


def point_of(data: dict, model: str, exposures: int, seed: int, rec: dict) -> Point:
    """A point of the grid, with its readable id."""
    point = Point("", data, model, exposures, seed, rec)
    extra = "".join(
        f"-{k}{v:g}" if isinstance(v, float) else f"-{k}{v}" for k, v in sorted(rec.items())
    )
    point.id = f"{point.data_id}__{model}__e{point.exposures}__seed{seed}{extra}"
    return point


def points(config: dict, progress: bool = False) -> list[Point]:
    """Every point of the grid, with a readable, unique id; the config is checked first.
    `progress`: show how far the expansion of a grid of more than MAX_POINTS got."""
    checked = check_config(config)
    keys = ("datasets", "models", "exposures", "seeds", "recipe")
    total = count_points(config)
    out = []
    with Progress(total, "grid", "point", enabled=progress and total > MAX_POINTS) as bar:
        for combo in itertools.product(*(checked[key] for key in keys)):
            out.append(point_of(*combo))
            bar.update(1)
    if len({p.id for p in out}) != len(out):
        raise InputError("sweep config: the grid repeats a point")
    return out


def slots(device: str, per_gpu: int, cpu_slots: int = 1, gpus_per_point: int = 1) -> list[dict]:
    """The environment of each worker slot: one per GPU, or per `gpus_per_point` GPUs
    (x per_gpu), or `cpu_slots` on the CPU, each with its share of the cores (shared by
    the ranks of a point that has several)."""
    threads = max(1, cpu_threads(cpu_slots) // gpus_per_point)
    cpu = [{"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(threads)}]
    if device == "cpu":
        return cpu * cpu_slots
    gpus = visible_gpus()
    if not gpus:
        if device == "cuda":
            raise InputError("--device cuda asked for, but no GPU is visible")
        return cpu * cpu_slots
    if len(gpus) < gpus_per_point:
        raise InputError(f"gpus_per_point is {gpus_per_point}, but {len(gpus)} GPU(s) are visible")
    whole = len(gpus) - len(gpus) % gpus_per_point
    groups = [gpus[i : i + gpus_per_point] for i in range(0, whole, gpus_per_point)]
    return [{"CUDA_VISIBLE_DEVICES": ",".join(g)} for g in groups for _ in range(per_gpu)]


def visible_gpus() -> list[str]:
    """The GPUs this process may use, named as its children's CUDA_VISIBLE_DEVICES must
    name them (a Slurm job's own GPUs, say, not the first ones of the node)."""
    import torch

    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    return listed.split(",")[:count] if listed else [str(g) for g in range(count)]


def cpu_threads(cpu_slots: int) -> int:
    """Threads for each of `cpu_slots` runs sharing this process's cores (in a Slurm job,
    the CPUs it was given)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = int(os.environ.get("SLURM_CPUS_PER_TASK") or cores or 1)
    return max(1, cores // cpu_slots)


def cost(point: Point) -> float:
    """A point's training FLOPs, roughly (tokens ~ N x exposures), to start the costliest
    first."""
    flops = ModelConfig.from_name(point.model, 64).flops_per_token()
    return float(point.data["n"]) * point.exposures * flops


def check_points(grid: list[Point], config: dict, env: dict) -> None:
    """Train's checks of every point that need no dataset, made before the sweep writes
    anything: its options (`train.check_options`: the batch divides among its ranks, junk
    options together), and its model and batch per rank fitting the device it trains on
    (the config's train.device, else its slot's), with the smallest vocabulary (64 rows)
    a dataset can give it."""
    from bioknow.training import recipe
    from bioknow.training.train import check_fits, check_options

    gpu = env.get("CUDA_VISIBLE_DEVICES") != ""
    device = config["train"].get("device") or ("cuda" if gpu else "cpu")
    ranks, train = config["gpus_per_point"], config["train"]
    for point in grid:
        batch = point.recipe.get("batch") or recipe.default(point.data["n"], point.exposures).batch
        try:
            fraction, junk_n = train.get("junk_fraction") or 0.0, train.get("junk_n")
            check_options(batch, ranks, fraction, junk_n, validate.N0)
            check_fits(ModelConfig.from_name(point.model, 64), batch // ranks, device)
        except InputError as e:
            raise InputError(f"sweep point {point.id}: {e}") from None


def quantize_settings(config: dict) -> list[str]:
    settings = [str(q) for q in _listed(config, "quantize", ["none"])]
    if "none" not in settings:
        settings = ["none", *settings]
    return settings


def recorded(run: Path) -> dict:
    """The files integrity.json records for a run ({} if it has none or a bad one), but
    its stale reports (`runfolder.stale_reports`): the sweep evaluates again instead."""
    try:
        if not (run / integrity.RECORD).is_file():
            return {}
        stale = runfolder.stale_reports(run)
        return {k: v for k, v in integrity.load_record(run).items() if k not in stale}
    except InputError:
        return {}


def report_of(point: Point, config: dict, quantize: str) -> str:
    """The report a point's evaluation writes for one quantization setting (all people,
    or the sample the config's `eval: {people: K}` asks for, seed 0)."""
    people = (config.get("eval") or {}).get("people")
    return runfolder.report_name(point.data["n"], people, 0, quantize)


def probe_of(point: Point, config: dict) -> str | None:
    """The probe report a point writes (None: the config asks for no probe)."""
    options = config.get("probe")
    if options is None:
        return None
    return runfolder.probe_name(point.data["n"], options.get("people"), options.get("seed", 0))


def point_done(point: Point, sweep: Path, config: dict, quantize: list[str]) -> bool:
    names = ["model.safetensors", *(report_of(point, config, q) for q in quantize)]
    names += [probe_of(point, config)] if config.get("probe") is not None else []
    return all(n in recorded(sweep / "runs" / point.id) for n in names)


def commands(point: Point, sweep: Path, config: dict) -> list[list[str]]:
    """The bioknow commands of one point: train (or resume), then each evaluation, then
    the probe if the config asks for one."""
    run = sweep / "runs" / point.id
    bioknow = [sys.executable, "-m", "bioknow"]
    ranks = config.get("gpus_per_point", 1)
    trainer = [sys.executable, "-m", "bioknow.training.torchrun", "--standalone"]
    trainer = [*trainer, f"--nproc_per_node={ranks}", "-m", "bioknow"] if ranks > 1 else bioknow
    train_options = {**(config.get("train") or {}), **point.recipe}
    if (run / "config.json").is_file():
        train = [*trainer, "train", "--resume", "--out", str(run)]
    else:
        train = [
            *trainer,
            "train",
            "--data",
            str(sweep / "data" / point.data_id),
            "--model",
            point.model,
            "--exposures",
            str(point.exposures),
            "--seed",
            str(point.seed),
            "--out",
            str(run),
        ]
        for key, value in sorted(train_options.items()):
            flag = f"--{key.replace('_', '-')}"
            if value is True:
                train.append(flag)
            elif value is not False and value is not None:
                train += [flag, str(value)]
    done = recorded(run)
    out = [] if "model.safetensors" in done else [train]
    if out:  # training moves the weights on: a report of the present ones would be stale
        done = {}
    evaluation = config.get("eval") or {}
    for q in quantize_settings(config):
        if report_of(point, config, q) not in done:
            cmd = [*bioknow, "eval", str(run), "--quantize", q]
            if evaluation.get("people") not in (None, "all"):
                cmd += ["--people", str(evaluation["people"])]
            out.append(cmd)
    probe = probe_of(point, config)
    if probe is not None and probe not in done:
        flags = [[f"--{k.replace('_', '-')}", str(v)] for k, v in sorted(config["probe"].items())]
        out.append([*bioknow, "probe", str(run), *(a for pair in flags for a in pair)])
    return out


def tracker_env(config: dict, sweep: Path) -> dict:
    """The environment that groups a sweep's W&B runs: WANDB_RUN_GROUP, the sweep folder's
    name (unless it is set already)."""
    if config["train"].get("tracker") != "wandb":
        return {}
    return {"WANDB_RUN_GROUP": os.environ.get("WANDB_RUN_GROUP", Path(sweep).resolve().name)}


def workers(sweep: Path, config: dict, device: str, per_gpu: int, cpu_slots: int) -> list[dict]:
    """The environment of each worker slot of this machine (or Slurm job): its devices and
    threads (`slots`), and the tracker's."""
    envs = slots(device, per_gpu, cpu_slots, config["gpus_per_point"])
    return [{**env, **tracker_env(config, sweep)} for env in envs]


def run_point(
    point: Point, sweep: Path, config: dict, env: dict, children: process.Children | None = None
) -> str | None:
    """Run a point's commands (retrying once); None when done, else the error. Once
    `children` are stopped (a Slurm job preempted), the point stops, to resume later."""
    children = children or process.Children()
    log = sweep / "logs" / f"{point.id}.log"
    error = None
    with open(log, "a") as f:
        process.hold(f)  # while the point is worked on, between its commands too (--status)
        for _ in range(ATTEMPTS):
            error = None
            for cmd in commands(point, sweep, config):
                f.write(f"$ {' '.join(cmd)}\n")
                f.flush()
                status = children.run(cmd, f, env)
                if status != 0:
                    name = cmd[cmd.index("bioknow") + 1]
                    error = f"{name} exited with status {status} (see {log})"
                    break
            if error is None or children.stopping:
                return error
    return error


def row(point: Point, sweep: Path, config: dict, quantize: str, status: str, error) -> dict:
    """One results row: the point, its status (done, failed, or not yet finished: pending,
    or the state of its Slurm job), the resolved config, the eval report (named in
    `report`) so far, speed."""
    run = sweep / "runs" / point.id
    report = report_of(point, config, quantize)
    out = {
        "point": point.id,
        "status": status,
        "error": error,
        "variant": point.data["variant"],
        "n": point.data["n"],
        "data_seed": point.data.get("seed", 0),
        **{k: v for k, v in point.data.items() if k not in ("variant", "n", "seed")},
        "exposures": point.exposures,
        "model": point.model,
        "seed": point.seed,
        "quantize": quantize,
        "report": report,
    }
    try:
        out.update({k: v for k, v in run_columns(run, report).items() if k not in out})
        out.update(probe_columns(run, probe_of(point, config)))
    except InputError as e:  # a damaged run: its row says so, never a wrong number
        out.update(status="failed", error=str(e))
    return out


def run_columns(run: Path, report: str) -> dict:
    """A run's columns: its resolved config, progress and the evaluation report of that
    name, each file checked against the run's integrity.json."""
    out = {}
    if not (run / "config.json").is_file():
        return out
    config = runfolder.read_config(run)
    out.update({key: config["model"][key] for key in ("family", "n_layer", "n_head", "d_model")})
    out.update({key: config[key] for key in ("batch", "lr", "wd", "warmup", "steps", "tokens")})
    out["config"] = json.dumps(config)
    if runfolder.latest_checkpoint(run) is not None:
        state = runfolder.read_state(run)
        seconds = state.get("seconds")
        out.update(
            final_loss=state.get("final_loss"),  # the mean over the last 1% of steps
            wall_s=seconds,
            tokens_per_s=state["tokens"] / seconds if seconds else None,
        )
    if report in recorded(run):
        evaluation = integrity.read_run_json(run, report)
        consistency.check_report(run / report, evaluation, config["params"]["P"])
        if (evaluation["people"] < evaluation["N"]) != ("-people" in report):
            raise InputError(
                f"{run / report}: holds {evaluation['people']} of {evaluation['N']} people, "
                "not what its name says (an older bioknow's report); evaluate the run again"
            )
        for key, value in evaluation.items():
            if key == "attributes":
                for attribute, figures in value.items():
                    for figure, number in figures.items():
                        out[f"{attribute}_{figure}"] = number
            elif key == "before":
                out.update({f"{k}_before": v for k, v in value.items()})
            elif key == "weights":
                out["weights_sha256"] = value["sha256"]
            elif isinstance(value, (int, float, str)) and key not in out:
                out[key] = value
            elif isinstance(value, list) and key.endswith("_ci95"):
                out[f"{key}_low"], out[f"{key}_high"] = value
        out["accuracy"] = mean_accuracy(evaluation["attributes"])
    return out


def probe_columns(run: Path, name: str | None) -> dict:
    """A probe report's columns, when the run has it: accuracy on each half with its
    interval, on average (probe_test_accuracy, ...) and per attribute
    (probe_birth_city_test_accuracy, probe_ID_1_test_accuracy, ...)."""
    if name is None or name not in recorded(run):
        return {}
    report = integrity.read_run_json(run, name)
    out = {"probe_report": name, "probe_people": report["people"]}
    for half in ("train", "test"):
        out[f"probe_{half}_accuracy"] = report[half]["accuracy"]
        out[f"probe_{half}_ci95_low"], out[f"probe_{half}_ci95_high"] = report[half]["ci95"]
        for attribute, figures in report["attributes"].items():
            key = f"probe_{attribute.replace(' ', '_')}_{half}_accuracy"
            out[key] = figures[half]["accuracy"]
    return out


def trained_share(run: Path) -> float:
    """How much of a point's training is done: 1 once it has its final weights, else the
    step of its last metrics line over its steps (0 before any)."""
    if (run / "model.safetensors").is_file():
        return 1.0
    try:
        steps = json.loads((run / "config.json").read_text())["steps"]
        with open(run / "metrics.jsonl", "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = f.read().decode(errors="replace").splitlines()
        return min(1.0, json.loads(lines[-1])["step"] / steps)
    except (OSError, ValueError, KeyError, IndexError, TypeError, ZeroDivisionError):
        return 0.0  # not started, or its last line torn: counted as nothing yet


def table_rows(
    grid: list[Point], sweep: Path, config: dict, quantize: list[str], states: dict
) -> list[dict]:
    """Every point's rows, written to runs.parquet and runs.csv. `states`: the (status,
    error) of points known; the others are done or pending, by their run folder (a sweep
    stopped early still leaves the table of what it did)."""
    rows = []
    for p in grid:
        done = point_done(p, sweep, config, quantize)
        status, error = states.get(p.id) or ("done" if done else "pending", None)
        rows += [row(p, sweep, config, q, status, error) for q in quantize]
    write_table(sweep, rows)
    return rows


def write_table(sweep: Path, rows: list[dict]) -> None:
    """runs.parquet and runs.csv, each written under a temporary name and renamed."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    table = pa.table({c: pa.array([r.get(c) for r in rows]) for c in columns})
    for name, write in (("runs.parquet", pq.write_table), ("runs.csv", pacsv.write_csv)):
        tmp = atomic.temp_path(sweep / name)
        write(table, tmp)
        os.replace(tmp, sweep / name)


def run_points(
    pending: list[Point],
    sweep: Path,
    config: dict,
    workers: list[dict],
    bar: Progress | None = None,
    children: process.Children | None = None,
    finished=None,
) -> dict[str, str | None]:
    """Run the points on the worker slots (one at a time each, the costliest first); their
    errors by id (None: done). `finished(point, error)` is called as each one ends (one
    call at a time)."""
    pending = sorted(pending, key=cost, reverse=True)
    bar = bar or Progress(len(pending), "sweep", "point", enabled=False)
    children = children or process.Children()
    errors: dict[str, str | None] = {}
    lock = threading.Lock()
    running: set[str] = set()

    def show() -> None:
        failed = sum(e is not None for e in errors.values())
        bar.set_postfix(running=len(running), failed=failed)

    def worker(env: dict) -> None:
        while True:
            with lock:
                if not pending or children.stopping:
                    return
                point = pending.pop(0)
                running.add(point.id)
                show()
            error = run_point(point, sweep, config, env, children)
            with lock:
                running.discard(point.id)
                errors[point.id] = error
                if finished is not None:
                    finished(point, error)
                show()
                bar.update(1)

    threads = [threading.Thread(target=worker, args=(env,), daemon=True) for env in workers]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(1.0)
        with lock:
            bar.tick()
    return errors


def generate_dataset(data: dict, out: Path) -> None:
    """A dataset of the grid (generate's arguments: variant, n, seed, ...), in `out`."""
    biod = {k: data[k] for k in dataset.BIOD_KEYS if k in data} or None
    extra = {k: data[k] for k in GENERATE_EXTRA if k in data}
    dataset.generate(
        data["variant"],
        data["n"],
        data.get("seed", 0),
        out,
        sample=0,
        overwrite=True,
        biod=biod,
        **extra,
    )


def run_sweep(
    config_path,
    out,
    device: str | None = None,
    per_gpu: int = 1,
    progress: bool = False,
    cpu_slots: int = 1,
    launcher=None,
    max_points: int | None = None,
    started=None,
    children: process.Children | None = None,
) -> list[dict]:
    """Run (or continue) the sweep of `config_path` (a YAML or JSON file, or the grid as
    a mapping) in `out`; return the results rows. A grid of more than `max_points`
    points (default `grid.MAX_POINTS`) is refused, counted before it is expanded.
    `launcher`: None runs the points on this machine; else an object that runs them
    elsewhere (a `bioknow.study.slurm.Launcher` submits them to Slurm): `launcher.check(config)`
    refuses what does not fit before anything is written, and
    `launcher(grid, pending, sweep, config, bar)` returns every point's (status, error).
    `started(config, data_folder)` is called once the datasets exist, before any point
    runs (the CLI prints the sweep's plan). `children` runs the commands (default: each
    in a child process)."""
    placement = {"out": out, "device": device, "per_gpu": per_gpu, "cpu_slots": cpu_slots}
    checked = validate.check(validate.SWEEP, {**placement, "max_points": max_points}, "--")
    raw = load_config(config_path)
    check_size(raw, checked["max_points"])
    grid = points(raw, progress)
    config = check_config(raw)
    sweep = Path(out)
    previous = sweep / "sweep.json"
    resolved = {"config": raw, "points": [p.__dict__ for p in grid]}
    ownership.claim(sweep, "sweep", resume=True)
    if previous.is_file():
        prior = integrity.read_json(previous)
        if not isinstance(prior, dict) or prior.get("config") != raw:
            raise InputError(f"{sweep}: holds a sweep of another config (use a new --out)")
    device = device or "auto"
    if launcher is None:
        envs = workers(sweep, config, device, int(per_gpu), int(cpu_slots))
        check_points(grid, config, envs[0])
    else:
        launcher.check(config)
    for folder in ("data", "runs", "logs"):
        (sweep / folder).mkdir(parents=True, exist_ok=True)
    if not (sweep / ownership.MARKER).is_file():
        ownership.write_marker(sweep, "sweep")
    atomic.write_json(previous, resolved)

    for data_id, data in {p.data_id: p.data for p in grid}.items():
        if not (sweep / "data" / data_id / "manifest.json").is_file():
            generate_dataset(data, sweep / "data" / data_id)
    if started is not None:
        started(raw, sweep / "data")

    quantize = quantize_settings(config)
    pending = [p for p in grid if not point_done(p, sweep, config, quantize)]

    def share() -> float:  # of the grid's training FLOPs, done
        done = sum(cost(p) * trained_share(sweep / "runs" / p.id) for p in grid)
        return done / sum(cost(p) for p in grid)

    bar = Progress(
        len(grid), "sweep", "point", len(grid) - len(pending), enabled=progress, share=share
    )
    began = time.perf_counter()
    if launcher is None:
        states: dict[str, tuple] = {}

        def finished(point: Point, error: str | None) -> None:  # the table so far
            states[point.id] = ("failed" if error else "done", error)
            table_rows(grid, sweep, config, quantize, states)

        run_points(pending, sweep, config, envs, bar, children, finished=finished)
    else:
        states = launcher(grid, pending, sweep, config, bar)
    bar.close()
    rows = table_rows(grid, sweep, config, quantize, states)
    atomic.write_json(
        sweep / "sweep.json",
        {
            **resolved,
            "seconds": time.perf_counter() - began,
            "failed": [k for k, (status, _) in states.items() if status == "failed"],
        },
    )
    return rows
