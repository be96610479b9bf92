"""The trainer: a dataset folder, a model name and a number of exposures -> a run folder
(its files: `bioknow.training.runfolder`).

`train` checks the arguments and resolves the run's config (or reopens a run to resume);
`loop` then trains as nanoGPT's loop reads: a `Trainer` is set up, and each batch is a
`step`, every log_every steps a `log` line, every checkpoint_every steps a `checkpoint`.

Steps follow from the exposures (every person exactly E times), never typed in. On
CUDA: bf16 autocast, torch.compile, fused AdamW, no host synchronisation inside a step.
On the CPU: bf16 autocast where the CPU has native bf16 (else float32), torch.compile for
runs long enough to repay its cost. Under `torchrun` every rank draws the same global
batches and trains on its share of the rows (DDP); rank 0 alone writes, holding the
run's lock. A run can always resume from its last checkpoint, and resuming gives the
same weights, losses and metrics as an uninterrupted run (bit for bit on the CPU). A
loss or weight that is not finite stops the run with an InputError, keeping the last
good checkpoint.
"""

import dataclasses
import logging
import math
import os
import shutil
import signal
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from bioknow.base import atomic, consistency, integrity, ownership, validate
from bioknow.base.errors import BioknowWarning, InputError
from bioknow.base.process import RunLock
from bioknow.base.progress import Forecast, Progress
from bioknow.data.dataset import Dataset, open_dataset, versions
from bioknow.data.render.tokens import Prefixed
from bioknow.data.stream import WINDOW, JunkSource, MixedStream, Position, TrainStream
from bioknow.data.tokenizer import padded_vocab_size
from bioknow.training import ranks, recipe, runfolder, track
from bioknow.training.feed import Prefetcher, Ready
from bioknow.training.model import ModelConfig, Transformer
from bioknow.training.runfolder import latest_checkpoint  # noqa: F401 (part of this module's API)

FORMAT = "bioknow-run/1"
log = logging.getLogger(__name__)
PRECISIONS = ("bf16", "float32")
# On the CPU, torch.compile makes a tiny model's step about 1.2-1.3x faster but costs
# 10-30 s to compile: by default only runs of at least this many steps compile.
CPU_COMPILE_STEPS = 2000
DEFAULTS = {"seed": 0, "log_every": 50, "checkpoint_every": 1000}
# The final loss: the token-weighted mean training loss over the last 1% of the steps (at
# least one), summed inside the step loop and checkpointed, so neither --log-every nor an
# interruption changes it.
FINAL_SHARE = 0.01


def final_steps_from(steps: int) -> int:
    """The first step (0-based) whose loss counts towards the final loss."""
    return steps - max(1, math.ceil(steps * FINAL_SHARE))


def default_precision(device: torch.device) -> str:
    """bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16, AMX), else float32."""
    if device.type == "cuda" or torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "bf16"
    return "float32"


@dataclass
class Placement:
    """Where this process trains: its rank among `world` and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def writer(self) -> bool:
        return self.rank == 0


def place(device: str | None) -> Placement:
    """Join the torchrun process group if there is one, and pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = validate.Device()(device, "--device")
    if device == "cuda":
        device = f"cuda:{local}"
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    return Placement(rank, world, torch.device(device))


def run_table(config: dict, ds):
    """The table a run trains and is evaluated on: the dataset's, or (any variant) with
    the run's useful-data prefix, a special token right after every unit's end-of-text."""
    prefix = config.get("useful_prefix")
    return ds.table if prefix is None else Prefixed(ds.table, prefix)


def training_stream(config: dict, ds) -> TrainStream | MixedStream:
    """The exposure-exact stream of a run, mixed with junk windows if it has junk: units
    of the dataset's format (bioD for bioD, else bioS) about a population of its own."""
    table = run_table(config, ds)
    stream = TrainStream(table, config["exposures"], config["batch"], config["seed"], ds.online)
    junk = config.get("junk")
    if junk is None:
        return stream
    source = JunkSource(ds.junk_table(table.tokenizer, junk["seed"], junk["n"]), stream.window)
    return MixedStream(stream, source, junk["fraction"])


def open_run_dataset(config: dict) -> Dataset:
    """The dataset a run was trained on, checked, and refused if it changed since."""
    ds = open_dataset(config["data"])
    if atomic.sha256(Path(config["data"]) / "manifest.json") != config["data_manifest_sha256"]:
        raise InputError(
            f"{config['data']}: not the dataset this run was trained on (its manifest.json "
            "differs from the one recorded in the run's config.json)"
        )
    return ds


def state_memory(cfg: ModelConfig, batch_rows: int) -> int:
    """Bytes a model and batch need at least: weights, gradients, AdamW moments (float32)
    and the logits."""
    experts = cfg.n_expert if cfg.mlp == "moe" else 1
    matrices = {"none": 0, "swiglu": 3}.get(cfg.mlp, 2)
    block = 2 * cfg.d_model**2 + experts * matrices * cfg.d_model * cfg.mlp_hidden
    at_least = cfg.n_layer * block + cfg.vocab_size * cfg.d_model  # no k, v maps, no biases
    logits = 8 * batch_rows * WINDOW * cfg.vocab_size
    return 16 * at_least + logits


def check_fits(cfg: ModelConfig, batch_rows: int, device) -> None:
    """A model and batch whose weights, gradients, AdamW moments and logits alone would
    exceed the device's memory are refused with the estimate, before the model is built."""
    what = f"training {cfg.name} on batches of {batch_rows}"
    validate.fits_memory(state_memory(cfg, batch_rows), what, str(device))


def check_memory(cfg: ModelConfig, used: int, batch_rows: int, device: torch.device) -> dict:
    """The parameter counts of a model, once `check_fits` has passed."""
    check_fits(cfg, batch_rows, device)
    return Transformer(cfg).parameter_counts(used)


def check_options(batch: int, world: int, fraction: float, junk_n: int | None, n0: int) -> None:
    """The checks of a run's options that need no more of its dataset than N0 (its
    fields' distinct names): the batch divides among the ranks, the junk options go
    together. A sweep makes them for every point before it writes anything."""
    if batch % world:
        raise InputError(f"batch {batch} must be divisible by {world} ranks")
    if not 0 <= fraction < 1:
        raise InputError(f"--junk-fraction must be in [0, 1), got {fraction}")
    if fraction and not (junk_n and 1 <= junk_n <= n0):
        raise InputError(f"--junk-fraction needs --junk-n N' in [1, {n0}]")
    if junk_n is not None and not fraction:
        raise InputError("--junk-n needs --junk-fraction F > 0")


def resolve_config(
    data: str, model_name: str, exposures: int, options: dict, device: torch.device, world: int
) -> tuple[dict, Dataset, TrainStream | MixedStream]:
    """Everything a run is, resolved from the checked arguments (options: batch, lr, wd,
    warmup, seed, compile, precision, junk_fraction, junk_n, useful_prefix, log_every,
    checkpoint_every), the dataset and the recipe; with the opened dataset and the run's
    stream (its exact token count already made)."""
    ds = open_dataset(data)
    overrides = {k: options.get(k) for k in ("lr", "wd", "batch") if options.get(k) is not None}
    rec = dataclasses.replace(recipe.default(ds.manifest["n"], exposures), **overrides)
    fraction, junk_n = options.get("junk_fraction") or 0.0, options.get("junk_n")
    if ds.fields is None and (fraction or junk_n or options.get("useful_prefix") is not None):
        raise InputError("random data takes no junk mixture and no --useful-prefix")
    check_options(rec.batch, world, fraction, junk_n, ds.fields.n0 if ds.fields else 0)
    prefix = options.get("useful_prefix")
    if prefix is not None and prefix in ds.tokenizer.get_vocab():
        raise InputError(f"--useful-prefix must be a new token, not {prefix!r}")
    cfg = ModelConfig.from_name(model_name, 64)  # a misspelt name fails before the counting
    cuda = device.type == "cuda"
    compile = options.get("compile")
    precision = options.get("precision") or default_precision(device)
    config = {
        "format": FORMAT,
        "data": str(Path(data).resolve()),
        "data_manifest_sha256": atomic.sha256(Path(data) / "manifest.json"),
        "variant": ds.manifest["variant"],
        "n": ds.manifest["n"],
        "exposures": exposures,
        "batch": rec.batch,
        "window": WINDOW,
        "seed": options["seed"],
        "junk": {"fraction": fraction, "n": junk_n, "seed": ds.manifest["seed"] + 1}
        if fraction
        else None,
        "useful_prefix": prefix,
    }
    used = ds.manifest["tokenizer"]["used_ids"] + (prefix is not None)
    stream = training_stream(config, ds)
    cfg = ModelConfig.from_name(model_name, padded_vocab_size(stream.table.tokenizer))
    params = check_memory(cfg, used, rec.batch // world, device)
    warm, note = recipe.warmup_steps(stream.steps, options.get("warmup"))
    warning = recipe.short_run_warning(stream.steps, rec.batch)
    config = {
        **config,
        "model": cfg.to_dict(),
        "params": params,
        "used_ids": used,
        "flops_per_token": cfg.flops_per_token(WINDOW),
        "steps": stream.steps,
        "tokens": stream.total_tokens,
        "lr": rec.lr,
        "wd": rec.wd,
        "warmup": warm,
        "warmup_note": note,
        "recipe": recipe.describe(rec, list(overrides)),
        "warnings": [warning] if warning else [],
        "betas": list(recipe.BETAS),
        "eps": recipe.EPS,
        "min_lr_ratio": recipe.MIN_LR_RATIO,
        "log_every": options["log_every"],
        "checkpoint_every": options["checkpoint_every"],
        "device": device.type,
        "precision": precision,
        "compile": (cuda or stream.steps >= CPU_COMPILE_STEPS) if compile is None else compile,
        "cuda_graphs": bool(options.get("cuda_graphs")),
        "world_size": world,
        "versions": {**versions(), "torch": torch.__version__},
    }
    return config, ds, stream


def optimizer(model: torch.nn.Module, config: dict, device: torch.device) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no weight decay on biases and norms (the
    parameters of fewer than 2 dims)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.dim() >= 2]
    no_decay = [p for p in trainable if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config["wd"]},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups,
        lr=config["lr"],
        betas=tuple(config["betas"]),
        eps=config["eps"],
        fused=device.type == "cuda",
    )


def optimizer_step(
    model, opt, x, y, lr: float, scale: float = 1.0, bf16: bool = False
) -> torch.Tensor:
    """One step at learning rate `lr` (under bf16 autocast if `bf16`: matrix products in
    bf16, weights, norms, softmax and the loss in float32); the loss, still on device."""
    for group in opt.param_groups:
        group["lr"] = lr
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        _, loss = model(x, y)
    (loss * scale).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def pending_loss(loss_sum: torch.Tensor, counted: int, where: Placement) -> list:
    """A loss sum and its token count (the loss not yet in a metrics line, or that of the
    final steps), over all ranks."""
    both = torch.tensor([float(loss_sum), counted], dtype=torch.float64, device=where.device)
    if where.world > 1:
        dist.all_reduce(both)
    return [float(both[0]), int(both[1])]


class Stopper:
    """Turns SIGINT and SIGTERM into a request to checkpoint and stop after this step."""

    def __init__(self):
        self.signal = 0

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.old = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def handle(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for s, handler in getattr(self, "old", {}).items():
            signal.signal(s, handler)


def announce(config: dict, run: Path) -> None:
    """Report how the run's recipe was chosen and where it is tracked (logging, INFO) and
    any warning about it (a BioknowWarning); the command line shows them on stderr."""
    log.info(
        f"{config['model']['name']}: {config['steps']:,} steps of batch {config['batch']}, "
        f"lr {config['lr']:g}, wd {config['wd']:g}, warmup {config['warmup']}, "
        f"{config['precision']} on {config['device']}; recipe: {config['recipe']}"
    )
    for warning in config.get("warnings", []):
        warnings.warn(warning, BioknowWarning, stacklevel=2)
    if config.get("tracker"):
        log.info(f"bioknow: tracking: {track.describe(config['tracker'], run)}")


def missing_options(**given) -> str:
    """The options a new run lacks, named: "train needs --model and --exposures (...)"."""
    names = [f"--{name}" for name, value in given.items() if value is None]
    listed = " and ".join(filter(None, [", ".join(names[:-1]), names[-1]]))
    return f"train needs {listed} (or --resume to continue a run)"


def fresh_state() -> dict:
    return {
        "step": 0,
        "position": dataclasses.asdict(Position(0, 0)),
        "tokens": 0,  # useful tokens: exposures count these alone
        "junk_tokens": 0,
        "finished": False,
        "loss": None,
        "final_loss": None,
    }


def begin(run: Path, config: dict, overwrite: bool) -> None:
    """Make the run folder (its lock held): clear an old run it replaces (`ownership.claim`
    decides), write its marker and config.json, and start integrity.json."""
    if ownership.claim(run, "run", overwrite, [config["data"]]) == "replace":
        for p in run.iterdir():
            if p.name != "lock":
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    integrity.write_run_json(run, ownership.MARKER, ownership.marker("run"))
    integrity.write_run_json(run, "config.json", config)
    announce(config, run)


def reopen(run: Path, where: Placement):
    """A stopped run's config, dataset, latest checkpoint and state, checked."""
    config = runfolder.read_config(run)
    consistency.check_mixture(run, config)
    ds = open_run_dataset(config)
    checkpoint = latest_checkpoint(run)
    state = runfolder.read_state(run, checkpoint) if checkpoint else fresh_state()
    ranks.on_writer(where, lambda: [atomic.clean_stale(f) for f in (run, run / "checkpoints")])
    return config, ds, checkpoint, state


def check_stream(run: Path, config: dict, stream) -> None:
    """Refuse to resume a run on a stream other than the one it started on (one an
    older bioknow made differently): its exact token count must be the config's."""
    if stream.total_tokens != config["tokens"]:
        raise InputError(
            f"{run}: started on a stream of {config['tokens']:,} tokens, but its data now "
            f"make {stream.total_tokens:,} (a stream this bioknow makes differently); "
            "it cannot be resumed"
        )


def check_resume(run: Path, given: dict, overwrite: bool) -> None:
    """--resume continues a run as it was started: refuse the options it is made of."""
    extra = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None]
    if extra or overwrite:
        raise InputError(
            f"--resume continues {run} as it was started; it takes none of "
            f"{', '.join(extra or ['--overwrite'])}"
        )
    if not (run / "config.json").is_file():
        raise InputError(f"{run}: nothing to resume (no config.json)")


def train(
    data: str | None,
    model_name: str | None,
    exposures: int | None,
    out,
    *,
    batch=None,
    lr=None,
    wd=None,
    warmup=None,
    seed: int | None = None,
    device: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    compile: bool | None = None,
    cuda_graphs: bool = False,
    precision: str | None = None,
    junk_fraction: float | None = None,
    junk_n: int | None = None,
    useful_prefix: str | None = None,
    log_every: int | None = None,
    checkpoint_every: int | None = None,
    stop_after: int | None = None,
    progress: bool = False,
    tracker: str | None = None,
) -> dict:
    """Train, or resume, the run in `out`; return its state (step, tokens, loss, ...).
    Every argument is checked before anything is written; --resume takes none of the
    options a run is made of (seed and log_every default to 0 and 50, checkpoint_every
    to 1000). `tracker`: "tensorboard" or "wandb" logs the run there too
    (`bioknow.training.track`)."""
    run = Path(out)
    given = dict(
        data=data,
        model=model_name,
        exposures=exposures,
        batch=batch,
        lr=lr,
        wd=wd,
        warmup=warmup,
        seed=seed,
        compile=compile,
        cuda_graphs=cuda_graphs or None,
        precision=precision,
        junk_fraction=junk_fraction,
        junk_n=junk_n,
        useful_prefix=useful_prefix,
        log_every=log_every,
        checkpoint_every=checkpoint_every,
        tracker=tracker,
    )
    checked = validate.check(validate.TRAIN, {**given, "device": device, "stop_after": stop_after})
    where = place(checked["device"])
    if resume:
        check_resume(run, given, overwrite)
    elif None in (data, model_name, exposures):
        raise InputError(missing_options(data=data, model=model_name, exposures=exposures))
    else:
        ownership.claim(run, "run", overwrite, [data])
        options = {**DEFAULTS, **{k: v for k, v in checked.items() if v is not None}}
        config, ds, stream = resolve_config(
            data, model_name, options["exposures"], options, where.device, where.world
        )
        config["tracker"] = track.settings(options.get("tracker"), run)
    # rank 0 alone holds the lock and writes; every rank learns at once if that fails
    with ranks.on_writer(where, RunLock(run).acquire) or nullcontext():
        if resume:
            config, ds, checkpoint, state = reopen(run, where)
        else:
            checkpoint, state = None, fresh_state()
            ranks.on_writer(where, lambda: begin(run, config, overwrite))
        if state["finished"]:
            ranks.on_writer(where, lambda: runfolder.ensure_finished(run))
            return state
        if resume:
            stream = training_stream(config, ds)
            check_stream(run, config, stream)
        state = loop(run, config, stream, checkpoint, state, where, stop_after, progress)
        if state["finished"]:
            ranks.on_writer(where, lambda: runfolder.finish(run))
    if where.world > 1:
        dist.barrier()
    return state


def build(config: dict, where: Placement, checkpoint: Path | None, run: Path):
    """The model and optimizer of a run, from the checkpoint's files if there is one."""
    torch.manual_seed(config["seed"])
    raw = Transformer(ModelConfig(**config["model"])).to(where.device)
    opt = optimizer(raw, config, where.device)
    if checkpoint is not None:
        name = runfolder.rel(checkpoint, run)
        weights = integrity.check_run_file(run, f"{name}/model.safetensors")
        runfolder.load_weights(raw, weights, where.device)
        moments = integrity.check_run_file(run, f"{name}/optimizer.pt")
        runfolder.load_optimizer(opt, moments, where.device)
    return raw, opt


def wrap(raw: torch.nn.Module, config: dict, where: Placement) -> torch.nn.Module:
    """The model as trained: under DDP across ranks, compiled if the run says so."""
    model = raw
    if where.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            raw, device_ids=[where.device.index] if where.device.type == "cuda" else None
        )
    if not config["compile"]:
        return model
    # CUDA graphs replay a whole step's kernels at once: tiny models are launch-bound
    return torch.compile(model, mode="reduce-overhead" if config.get("cuda_graphs") else None)


def not_finite(run: Path, what: str, step: int) -> InputError:
    kept = latest_checkpoint(run)
    return InputError(
        f"{run}: the training {what} at step {step}; stopped"
        + (f", the last good checkpoint ({kept.name}) is kept" if kept else "")
    )


def loop(run, config, stream, checkpoint, state, where, stop_after, progress) -> dict:
    """Train from `state` to the end or a stop, in nanoGPT's order: set up, then for each
    batch a step, a metrics line every log_every steps (and at the end), a checkpoint
    every checkpoint_every steps (and at the end or a stop)."""
    trainer = Trainer(run, config, checkpoint, state, where, progress)
    batches = stream.batches(state["step"], start=Position(**state["position"]))
    with Stopper() as stopper, Prefetcher(batches, trainer.rows, where.device) as feed:
        for ready in feed:
            trainer.step(ready)
            step = state["step"]
            last = step == config["steps"]
            if step % config["log_every"] == 0 or last:
                trainer.log()
            trainer.bar.update(1)
            trainer.forecast.update(step)
            stop = trainer.stop_requested(stopper.signal, stop_after)
            if last or stop or step % config["checkpoint_every"] == 0:
                trainer.checkpoint(finished=last)
            if stop and not last:
                break
    trainer.close()
    state["signal"] = stopper.signal
    return state


class Trainer:
    """One process's part of a run's training, in named parts: the setup (`__init__`),
    `step`, `log`, `stop_requested` and `checkpoint`. It updates `state` in place."""

    def __init__(
        self, run: Path, config: dict, checkpoint, state: dict, where: Placement, progress: bool
    ):
        """The model and optimizer (from the checkpoint, if any), this rank's rows of each
        batch, the loss not yet logged, the metrics log, the tracker and the progress bar."""
        self.run, self.config, self.state, self.where = run, config, state, where
        self.raw, self.opt = build(config, where, checkpoint, run)
        self.model = wrap(self.raw, config, where)
        self.bf16 = config["precision"] in ("bf16", "bf16 autocast")  # the second: before 0.2
        if where.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        batch = config["batch"]
        self.rows = slice(
            where.rank * batch // where.world, (where.rank + 1) * batch // where.world
        )
        self.start_step = state["step"]
        self.seconds_before = state.get("seconds", 0.0)  # training time of earlier invocations
        # the loss since the last metrics line, carried through checkpoints (rank 0 holds it)
        pending = state.get("pending", [0.0, 0]) if where.writer else [0.0, 0]
        self.loss_sum = torch.tensor(pending[0], dtype=torch.float32, device=where.device)
        self.meter = Meter(counted=pending[1], seen=seen(state))
        # the loss of the final steps (FINAL_SHARE), carried through checkpoints the same way
        final = state.get("final_sum", [0.0, 0]) if where.writer else [0.0, 0]
        self.final_from = final_steps_from(config["steps"])
        self.final_known = "final_sum" in state or state["step"] <= self.final_from
        self.final_sum = torch.tensor(final[0], dtype=torch.float64, device=where.device)
        self.final_counted = final[1]
        self.metrics, self.tracker = ranks.on_writer(where, self.open_logs) or (
            None,
            track.Tracker(),
        )
        self.started = time.perf_counter()
        show = progress and where.writer
        self.recent = Recent(where.device, seen(state))
        self.bar = Progress(
            config["steps"],
            "train",
            "step",
            initial=self.start_step,
            enabled=show,
            measure=lambda: self.recent.figures(seen(self.state)),
        )
        quick = "a first try takes minutes with fewer --exposures or a smaller --model"
        cpu = where.device.type == "cpu"
        self.forecast = Forecast(config["steps"], quick, show and cpu)

    def open_logs(self) -> tuple:
        """The metrics log and the tracker (the writing rank's)."""
        metrics = runfolder.MetricsLog(self.run, self.state)
        return metrics, track.open_tracker(self.run, self.config, self.start_step)

    def write_log(self, line: dict) -> None:
        self.metrics.append(line)
        self.tracker.log(line)

    def write_checkpoint(self) -> None:
        self.metrics.mark(self.state)
        runfolder.save_checkpoint(self.run, self.raw, self.opt, self.state)

    def step(self, ready: Ready) -> None:
        """One optimizer step on a batch (at the schedule's learning rate); the state moves
        past the batch."""
        batch, step = ready.batch, ready.batch.step
        lr = recipe.lr_at(step, self.config["steps"], self.config["lr"], self.config["warmup"])
        # scaled so that averaging gradients over ranks gives the mean over all tokens
        scale = ready.mine * self.where.world / max(ready.total, 1)
        loss = optimizer_step(self.model, self.opt, ready.x, ready.y, lr, scale, bf16=self.bf16)
        if ready.mine:  # a rank's rows of a last batch may hold no target: its loss is nan
            weighted = loss * ready.mine
            self.loss_sum += weighted
            self.recent.add(weighted, ready.mine)
            if step >= self.final_from:
                self.final_sum += loss.double() * ready.mine
        self.meter.counted += ready.mine
        self.final_counted += ready.mine if step >= self.final_from else 0
        junk = int(batch.lengths[batch.junk].sum()) if batch.junk is not None else 0
        self.state.update(
            step=step + 1,
            position=dataclasses.asdict(batch.end),
            tokens=self.state["tokens"] + batch.valid - junk,
            junk_tokens=self.state.get("junk_tokens", 0) + junk,
            seconds=self.seconds_before + time.perf_counter() - self.started,
        )

    def log(self) -> None:
        """A metrics line (the mean loss since the last one): to metrics.jsonl, the tracker
        and the progress bar."""
        line = self.meter.line(
            self.run, self.loss_sum, self.state, self.opt, self.where, self.started
        )
        ranks.on_writer(self.where, lambda: self.write_log(line))
        rate = f"{line['tokens_per_s']:,.0f}"
        self.bar.set_postfix(**{"loss": f"{self.state['loss']:.4f}", "tokens/s": rate})

    def stop_requested(self, signal: int, stop_after: int | None) -> bool:
        """Whether to checkpoint and stop after this step: `stop_after` steps done, or a
        signal caught (under DDP the ranks agree on a signal at log steps only)."""
        step = self.state["step"]
        stop = stop_after is not None and step - self.start_step >= stop_after
        if self.where.world == 1:
            return stop or bool(signal)
        if step % self.config["log_every"] == 0:
            flag = torch.tensor([signal], device=self.where.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = stop or bool(flag.item())
        return stop

    def checkpoint(self, finished: bool) -> None:
        """Save the weights, the optimizer and the state (with the loss not yet logged);
        a loss or weights that are not finite stop the run, the last good checkpoint kept."""
        state = self.state
        state["finished"] = finished
        state["pending"] = pending_loss(self.loss_sum, self.meter.counted, self.where)
        state["final_sum"] = pending_loss(self.final_sum, self.final_counted, self.where)
        if not math.isfinite(state["pending"][0]) or not finite_weights(self.raw):
            raise not_finite(self.run, "loss or weights became non-finite", state["step"])
        total, counted = state["final_sum"]
        known = finished and self.final_known and counted > 0
        state["final_loss"] = total / counted if known else None
        state["trained_with"] = consistency.trained_with(self.config)
        ranks.on_writer(self.where, self.write_checkpoint)

    def close(self) -> None:
        self.bar.close()
        if self.metrics is not None:
            self.metrics.close()
        self.tracker.close()


def seen(state: dict) -> int:
    """Tokens processed, useful and junk."""
    return state["tokens"] + state.get("junk_tokens", 0)


def finite_weights(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


@dataclass
class Meter:
    """The loss and speed between metrics lines."""

    counted: int
    seen: int
    at: float = dataclasses.field(default_factory=time.perf_counter)

    def line(self, run, loss_sum, state: dict, opt, where: Placement, started: float) -> dict:
        """The metrics line of this step (the mean loss since the last one, over all
        ranks); a loss that is not finite stops the run."""
        mean = loss_sum.clone()
        if where.world > 1:
            dist.all_reduce(mean)
            counts = torch.tensor([self.counted], device=where.device, dtype=torch.float64)
            dist.all_reduce(counts)
            self.counted = int(counts.item())
        now = time.perf_counter()
        loss = float(mean.item()) / max(self.counted, 1)
        if not math.isfinite(loss):
            raise not_finite(run, f"loss became {loss}", state["step"])
        state["loss"] = loss
        line = {
            "step": state["step"],
            "tokens": state["tokens"],
            "junk_tokens": state["junk_tokens"],
            "loss": loss,
            "lr": opt.param_groups[0]["lr"],
            "tokens_per_s": (seen(state) - self.seen) / (now - self.at),
            "elapsed_s": now - started,
        }
        loss_sum.zero_()
        self.counted, self.seen, self.at = 0, seen(state), now
        return line


class Recent:
    """The loss and speed since the previous progress line (this rank's rows), so that each
    line under a pipe shows figures of its own interval, however far apart metrics lines
    are. The loss is read (a device sync) only when a line is shown."""

    def __init__(self, device: torch.device, tokens: int):
        self.loss = torch.zeros((), dtype=torch.float32, device=device)
        self.counted, self.seen, self.at = 0, tokens, time.perf_counter()

    def add(self, weighted_loss: torch.Tensor, targets: int) -> None:
        self.loss += weighted_loss.detach()
        self.counted += targets

    def figures(self, tokens: int) -> dict:
        """loss and tokens/s since the previous line ({} when no step ended); then start
        anew."""
        now = time.perf_counter()
        if not self.counted and tokens == self.seen:
            return {}
        out = {"loss": f"{self.loss.item() / self.counted:.4f}"} if self.counted else {}
        out["tokens/s"] = f"{(tokens - self.seen) / max(now - self.at, 1e-9):,.0f}"
        self.loss.zero_()
        self.counted, self.seen, self.at = 0, tokens, now
        return out


def load_run(run, device="cpu") -> tuple[dict, Transformer, dict]:
    """A run's config, its model with the final (else the latest) weights, and the state
    those weights are from; every file checked against the run's integrity.json."""
    run = Path(run)
    config = runfolder.read_config(run)
    consistency.check_mixture(run, config)
    model = Transformer(ModelConfig(**config["model"]))
    weights = runfolder.weights_file(run)
    runfolder.load_weights(model, weights)
    state = runfolder.read_state(run)
    if weights.name == "model.safetensors" and weights.parent == run and not state["finished"]:
        raise InputError(
            f"{weights}: final weights, but the run's latest checkpoint (step "
            f"{state['step']}) is not finished"
        )
    return config, model.to(device).eval(), state
