"""The trainer: a dataset folder, a model name and a number of exposures -> a run folder.

    RUN/config.json                       model, recipe and data, resolved
    RUN/checkpoints/step-NNNNNNNN/        model.safetensors, optimizer.pt, state.json
    RUN/checkpoints/latest                the name of the newest complete checkpoint
    RUN/model.safetensors                 the final weights
    RUN/metrics.jsonl                     step, tokens, loss, lr, tokens/s

Steps follow from the exposures (SPEC section 2.5), never typed in. On CUDA: bf16
autocast, torch.compile, fused AdamW, no host synchronisation inside a step. On the CPU:
bf16 autocast where the CPU has native bf16 (else float32), torch.compile for runs long
enough to repay its cost. Under `torchrun` every rank draws the same global
batches and trains on its share of the rows (DDP); rank 0 alone writes. A checkpoint
directory is written under a temporary name and renamed, so a run can always resume
from its last checkpoint, and resuming gives the same weights as an uninterrupted run
(bit for bit on the CPU).
"""

import dataclasses
import json
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_model, save_model
from tqdm import tqdm

from bioknow import atomic, recipe
from bioknow import tokenizer as tokenizers
from bioknow.dataset import Dataset, open_dataset, versions
from bioknow.errors import InputError
from bioknow.model import ModelConfig, Transformer
from bioknow.render.tokens import FragmentTable
from bioknow.stream import WINDOW, JunkSource, MixedStream, Position, TrainStream
from bioknow.tokenizer import padded_vocab_size

FORMAT = "bioknow-run/1"
IGNORE = -100
PRECISIONS = ("bf16", "float32")
# On the CPU, torch.compile makes a tiny model's step about 1.2-1.3x faster but costs
# 10-30 s to compile: by default only runs of at least this many steps compile.
CPU_COMPILE_STEPS = 2000


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
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but CUDA is not available")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise InputError(f"unknown --device {device!r}; use cpu, cuda or cuda:K")
    if device == "cuda":
        device = f"cuda:{local}"
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    return Placement(rank, world, torch.device(device))


def run_table(config: dict, ds) -> FragmentTable:
    """The fragment table a run trains and is evaluated on: the dataset's, or with the
    run's useful-data prefix as a special token opening every unit."""
    prefix = config.get("useful_prefix")
    if prefix is None:
        return ds.table
    return FragmentTable(ds.population, tokenizers.with_special(ds.tokenizer, [prefix]), prefix)


def training_stream(config: dict, ds) -> TrainStream | MixedStream:
    """The exposure-exact stream of a run, mixed with junk windows if it has junk."""
    table = run_table(config, ds)
    stream = TrainStream(table, config["exposures"], config["batch"], config["seed"], ds.online)
    junk = config.get("junk")
    if junk is None:
        return stream
    source = JunkSource(ds.fields, table.tokenizer, junk["seed"], junk["n"], stream.window)
    return MixedStream(stream, source, junk["fraction"])


def resolve_config(
    data: str, model_name: str, exposures: int, options: dict, device: torch.device, world: int
) -> tuple[dict, Dataset, TrainStream | MixedStream]:
    """Everything a run is, resolved from the arguments (options: batch, lr, wd, warmup,
    seed, compile, precision, junk_fraction, junk_n, useful_prefix), the dataset and the
    recipe; with the opened dataset and the run's stream (its exact token count already made)."""
    ds = open_dataset(data)
    if exposures < 1:
        raise InputError(f"--exposures must be >= 1, got {exposures}")
    overrides = {k: options.get(k) for k in ("lr", "wd", "batch") if options.get(k) is not None}
    rec = dataclasses.replace(recipe.default(ds.manifest["n"], exposures), **overrides)
    if rec.batch < 1 or rec.batch % world:
        raise InputError(f"batch {rec.batch} must be positive and divisible by {world} ranks")
    fraction, junk_n = options.get("junk_fraction") or 0.0, options.get("junk_n")
    if not 0 <= fraction < 1:
        raise InputError(f"--junk-fraction must be in [0, 1), got {fraction}")
    if fraction and not (junk_n and 1 <= junk_n <= ds.fields.n0):
        raise InputError(f"--junk-fraction needs --junk-n N' in [1, {ds.fields.n0}]")
    prefix = options.get("useful_prefix")
    if prefix is not None and (not prefix or prefix in ds.tokenizer.get_vocab()):
        raise InputError(f"--useful-prefix must be a new token, not {prefix!r}")
    cuda = device.type == "cuda"
    compile = options.get("compile")
    precision = options.get("precision") or default_precision(device)
    if precision not in PRECISIONS:
        raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    config = {
        "format": FORMAT,
        "data": str(Path(data).resolve()),
        "data_manifest_sha256": atomic.sha256(Path(data) / "manifest.json"),
        "variant": ds.manifest["variant"],
        "n": ds.manifest["n"],
        "exposures": exposures,
        "batch": rec.batch,
        "window": WINDOW,
        "seed": options.get("seed", 0),
        "junk": {"fraction": fraction, "n": junk_n, "seed": ds.manifest["seed"] + 1}
        if fraction
        else None,
        "useful_prefix": prefix,
    }
    stream = training_stream(config, ds)
    cfg = ModelConfig.from_name(model_name, padded_vocab_size(stream.table.tokenizer))
    used = ds.manifest["tokenizer"]["used_ids"] + (prefix is not None)
    warm, note = recipe.warmup_steps(stream.steps, options.get("warmup"))
    warning = recipe.short_run_warning(stream.steps)
    config = {
        **config,
        "model": dataclasses.asdict(cfg),
        "params": Transformer(cfg).parameter_counts(used),
        "used_ids": used,
        "flops_per_token": cfg.flops_per_token(WINDOW),
        "steps": stream.steps,
        "tokens": stream.total_tokens,
        "lr": rec.lr,
        "wd": rec.wd,
        "warmup": warm,
        "warmup_note": note,
        "recipe": rec.source + (f"; {', '.join(overrides)} as given" if overrides else ""),
        "warnings": [warning] if warning else [],
        "betas": list(recipe.BETAS),
        "eps": recipe.EPS,
        "min_lr_ratio": recipe.MIN_LR_RATIO,
        "device": device.type,
        "precision": precision,
        "compile": (cuda or stream.steps >= CPU_COMPILE_STEPS) if compile is None else compile,
        "world_size": world,
        "versions": {**versions(), "torch": torch.__version__},
    }
    return config, ds, stream


def optimizer(model: torch.nn.Module, config: dict, device: torch.device) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases and norms (the parameters of fewer than 2 dims)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
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


def targets_of(tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Position t predicts token t+1 of the same window; padding (beyond each row's
    length) and the last position of each window predict nothing."""
    real = np.arange(tokens.shape[1]) < np.asarray(lengths)[:, None]
    targets = np.full(tokens.shape, IGNORE, dtype=np.int64)
    targets[:, :-1] = np.where(real[:, 1:], tokens[:, 1:], IGNORE)
    return targets


def pending_loss(loss_sum: torch.Tensor, counted: int, where: Placement) -> list:
    """The loss sum and token count not yet in a metrics line, over all ranks."""
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


def announce(config: dict) -> None:
    """Say on stderr how the run's recipe was chosen, and any warning about it."""
    print(
        f"{config['model']['name']}: {config['steps']:,} steps of batch {config['batch']}, "
        f"lr {config['lr']:g}, wd {config['wd']:g}, warmup {config['warmup']}, "
        f"{config['precision']} on {config['device']}; recipe: {config['recipe']}",
        file=sys.stderr,
    )
    for warning in config.get("warnings", []):
        print(f"bioknow: warning: {warning}", file=sys.stderr)


def latest_checkpoint(run: Path) -> Path | None:
    pointer = run / "checkpoints" / "latest"
    return run / "checkpoints" / pointer.read_text().strip() if pointer.is_file() else None


def save_checkpoint(run: Path, model, opt, state: dict, metrics: list[dict]) -> None:
    """Write a complete checkpoint under a temporary name, rename it, point `latest` at
    it, then drop older ones."""
    folder = run / "checkpoints"
    name = f"step-{state['step']:08d}"
    tmp = folder / f".{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    atomic.write_json(tmp / "state.json", state)
    shutil.rmtree(folder / name, ignore_errors=True)
    os.replace(tmp, folder / name)
    atomic.write_bytes(folder / "latest", name.encode())
    for old in folder.glob("step-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    atomic.write_bytes(
        run / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics).encode()
    )


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
    seed: int = 0,
    device: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    compile: bool | None = None,
    precision: str | None = None,
    junk_fraction: float | None = None,
    junk_n: int | None = None,
    useful_prefix: str | None = None,
    log_every: int = 50,
    checkpoint_every: int = 1000,
    stop_after: int | None = None,
    progress: bool = False,
) -> dict:
    """Train, or resume, the run in `out`; return its state (step, tokens, loss, ...)."""
    run = Path(out)
    where = place(device)
    if resume:
        if not (run / "config.json").is_file():
            raise InputError(f"{run}: nothing to resume (no config.json)")
        config = json.loads((run / "config.json").read_text())
        ds = open_dataset(config["data"])
        if atomic.sha256(Path(config["data"]) / "manifest.json") != config["data_manifest_sha256"]:
            raise InputError(f"{config['data']}: the dataset changed since the run started")
        stream = training_stream(config, ds)
    else:
        if None in (data, model_name, exposures):
            raise InputError("train needs --data, --model and --exposures (or --resume)")
        atomic.check_target(run, overwrite, "config.json")
        options = dict(
            batch=batch,
            lr=lr,
            wd=wd,
            warmup=warmup,
            seed=seed,
            compile=compile,
            precision=precision,
            junk_fraction=junk_fraction,
            junk_n=junk_n,
            useful_prefix=useful_prefix,
        )
        config, ds, stream = resolve_config(
            data, model_name, exposures, options, where.device, where.world
        )
        if overwrite and where.writer:  # only once the new run's arguments are known good
            shutil.rmtree(run, ignore_errors=True)

    torch.manual_seed(config["seed"])
    raw = Transformer(ModelConfig(**config["model"])).to(where.device)
    opt = optimizer(raw, config, where.device)
    state = {
        "step": 0,
        "position": dataclasses.asdict(Position(0, 0)),
        "tokens": 0,  # useful tokens: exposures count these alone
        "junk_tokens": 0,
        "finished": False,
        "loss": None,
    }
    metrics: list[dict] = []
    checkpoint = latest_checkpoint(run) if resume else None
    if checkpoint is not None:
        load_model(raw, str(checkpoint / "model.safetensors"), device=str(where.device))
        opt.load_state_dict(
            torch.load(checkpoint / "optimizer.pt", weights_only=True, map_location=where.device)
        )
        state = json.loads((checkpoint / "state.json").read_text())
        lines = (run / "metrics.jsonl").read_text().splitlines()
        metrics = [m for m in map(json.loads, lines) if m["step"] <= state["step"]]
    if state["finished"]:
        return state
    if where.writer and not resume:
        run.mkdir(parents=True, exist_ok=True)
        atomic.write_json(run / "config.json", config)
        announce(config)

    model = raw
    if where.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            raw, device_ids=[where.device.index] if where.device.type == "cuda" else None
        )
    if config["compile"]:
        model = torch.compile(model)
    cuda = where.device.type == "cuda"
    bf16 = config["precision"] in ("bf16", "bf16 autocast")  # the second: runs before 0.2
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    rows = slice(
        where.rank * config["batch"] // where.world,
        (where.rank + 1) * config["batch"] // where.world,
    )

    steps, start_step = config["steps"], state["step"]
    seconds_before = state.get("seconds", 0.0)  # training time of earlier invocations
    # the loss since the last metrics line, carried through checkpoints (rank 0 holds it)
    pending = state.get("pending", [0.0, 0]) if where.writer else [0.0, 0]
    loss_sum = torch.tensor(pending[0], dtype=torch.float32, device=where.device)
    counted = pending[1]

    def seen() -> int:  # tokens processed, useful and junk
        return state["tokens"] + state.get("junk_tokens", 0)

    started, tokens_at_log, time_at_log = time.perf_counter(), seen(), time.perf_counter()
    bar = tqdm(
        total=steps,
        initial=start_step,
        desc="train",
        unit="step",
        disable=not (progress and where.writer),
    )
    with Stopper() as stopper:
        batches = stream.batches(start_step, start=Position(**state["position"]))
        for batch in batches:
            step = batch.step
            targets = targets_of(batch.tokens, batch.lengths)
            total = int((targets != IGNORE).sum())
            mine = int((targets[rows] != IGNORE).sum())
            x, y = (
                torch.from_numpy(a) for a in (batch.tokens[rows].astype(np.int64), targets[rows])
            )
            if cuda:
                x, y = (t.pin_memory().to(where.device, non_blocking=True) for t in (x, y))
            lr = recipe.lr_at(step, steps, config["lr"], config["warmup"])
            # scaled so that averaging gradients over ranks gives the mean over all tokens
            loss = optimizer_step(
                model, opt, x, y, lr, mine * where.world / max(total, 1), bf16=bf16
            )
            loss_sum += loss * mine
            counted += mine
            junk = int(batch.lengths[batch.junk].sum()) if batch.junk is not None else 0
            state.update(
                step=step + 1,
                position=dataclasses.asdict(batch.end),
                tokens=state["tokens"] + batch.valid - junk,
                junk_tokens=state.get("junk_tokens", 0) + junk,
                seconds=seconds_before + time.perf_counter() - started,
            )
            last = step + 1 == steps
            if (step + 1) % log_every == 0 or last:
                mean = loss_sum.clone()
                if where.world > 1:
                    dist.all_reduce(mean)
                    counts = torch.tensor([counted], device=where.device, dtype=torch.float64)
                    dist.all_reduce(counts)
                    counted = int(counts.item())
                now = time.perf_counter()
                state["loss"] = float(mean.item()) / max(counted, 1)
                rate = (seen() - tokens_at_log) / (now - time_at_log)
                metrics.append(
                    {
                        "step": step + 1,
                        "tokens": state["tokens"],
                        "junk_tokens": state["junk_tokens"],
                        "loss": state["loss"],
                        "lr": opt.param_groups[0]["lr"],
                        "tokens_per_s": rate,
                        "elapsed_s": now - started,
                    }
                )
                bar.set_postfix(loss=f"{state['loss']:.4f}", tok_s=f"{rate:,.0f}")
                loss_sum.zero_()
                counted, tokens_at_log, time_at_log = 0, seen(), now
            bar.update(1)
            stop = stop_after is not None and step + 1 - start_step >= stop_after
            if where.world == 1:
                stop = stop or bool(stopper.signal)
            elif (step + 1) % log_every == 0:  # ranks agree on a signal at log steps only
                flag = torch.tensor([stopper.signal], device=where.device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                stop = stop or bool(flag.item())
            if last or stop or (step + 1) % checkpoint_every == 0:
                state["finished"] = last
                state["pending"] = pending_loss(loss_sum, counted, where)
                if where.writer:
                    save_checkpoint(run, raw, opt, state, metrics)
            if stop and not last:
                break
    bar.close()
    if state["finished"] and where.writer:
        final = latest_checkpoint(run) / "model.safetensors"
        shutil.copyfile(final, run / ".model.safetensors.partial")
        os.replace(run / ".model.safetensors.partial", run / "model.safetensors")
    if where.world > 1:
        dist.barrier()
    state["signal"] = stopper.signal
    return state


def load_run(run, device="cpu") -> tuple[dict, Transformer, dict]:
    """A run's config, its model with the final (else the latest) weights, and the state
    those weights are from."""
    run = Path(run)
    if not (run / "config.json").is_file():
        raise InputError(f"{run}: not a bioknow run (no config.json)")
    config = json.loads((run / "config.json").read_text())
    model = Transformer(ModelConfig(**config["model"]))
    checkpoint = latest_checkpoint(run)
    if checkpoint is None:
        raise InputError(f"{run}: no weights yet (no checkpoint)")
    final = run / "model.safetensors"
    load_model(model, str(final if final.is_file() else checkpoint / "model.safetensors"))
    state = json.loads((checkpoint / "state.json").read_text())
    return config, model.to(device).eval(), state
