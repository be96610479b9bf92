"""The one validation layer (docs/design.md §9.5): every argument of every subcommand, of the
Python API and of a sweep config is checked here, before anything is written.

A schema maps an option to a rule; a rule turns a value (a number, or text as typed:
"2e4", "20_000") into a checked value or raises `InputError` naming the option. Whole
numbers must be whole ("1.5" is refused, never truncated), real numbers finite. Resource
checks estimate the memory or disk a request needs and refuse one the machine lacks.
"""

import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from bioknow.base.errors import InputError

SEED_MAX = 2**63 - 1
# distinct names of the default lists (docs/design.md §2.1): the largest N, and --junk-n, accepted;
# a fields folder with fewer names lowers the bound to its own N0
N0 = 400 * 400 * 1000
MAX_EXPOSURES = 10**6
MAX_T = 40_000  # bioD alphabet, as documented
MAX_STEPS = 10**12  # cadences and step counts


def _number(value):
    """An int or float from a number or its text, else InputError (bool and None too)."""
    if isinstance(value, bool) or value is None:
        raise ValueError
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value
    if hasattr(value, "dtype") and getattr(value, "shape", None) == ():  # numpy scalars
        return value.item()
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        try:
            return int(text)
        except ValueError:
            return float(text)
    raise ValueError


@dataclass(frozen=True)
class Number:
    """A finite number in [low, high] (low excluded if `above`, high if `below`); whole
    unless `real`."""

    low: float | None = None
    high: float | None = None
    real: bool = False
    above: bool = False
    below: bool = False

    def describe(self) -> str:
        kind = "a number" if self.real else "a whole number"
        low, high = (_show(x) for x in (self.low, self.high))
        if self.low is not None and self.high is not None:
            return (
                f"{kind} in {'(' if self.above else '['}{low}, {high}{')' if self.below else ']'}"
            )
        if self.low is not None:
            return f"{kind} {'>' if self.above else '>='} {low}"
        return kind

    def __call__(self, value, name: str):
        def refuse(why: str = "") -> InputError:
            return InputError(f"{name} must be {self.describe()}, got {value!r}{why}")

        try:
            number = _number(value)
        except (ValueError, TypeError, OverflowError):
            raise refuse(": not a number") from None
        if isinstance(number, float):
            if not math.isfinite(number):
                raise refuse(": not finite")
            if not (self.real or number.is_integer()):
                raise refuse(": not a whole number")
            number = number if self.real else int(number)
        elif self.real:
            number = float(number)
        low_ok = self.low is None or (number > self.low if self.above else number >= self.low)
        high_ok = self.high is None or (number < self.high if self.below else number <= self.high)
        if not low_ok or not high_ok:
            raise refuse()
        return number


def _show(x) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


@dataclass(frozen=True)
class Choice:
    options: tuple[str, ...]

    def __call__(self, value, name: str) -> str:
        if not isinstance(value, str) or value not in self.options:
            raise InputError(f"{name} must be one of {', '.join(self.options)}, got {value!r}")
        return value


@dataclass(frozen=True)
class Text:
    """A non-empty string without line breaks or NUL (it may end up in a file name)."""

    def __call__(self, value, name: str) -> str:
        if not isinstance(value, str) or not value.strip() or any(c in value for c in "\0\n\r"):
            raise InputError(f"{name} must be a non-empty text on one line, got {value!r}")
        return value


@dataclass(frozen=True)
class InPath:
    """A path to read (or a name, where a hub name may stand for one): text or a path
    object, not empty, on one line; as text."""

    def __call__(self, value, name: str) -> str:
        return Text()(os.fspath(value) if isinstance(value, os.PathLike) else value, name)


@dataclass(frozen=True)
class Flag:
    def __call__(self, value, name: str) -> bool:
        if not isinstance(value, bool):
            raise InputError(f"{name} must be true or false, got {value!r}")
        return value


@dataclass(frozen=True)
class People:
    """--people: "all" (None) or a positive whole number."""

    def __call__(self, value, name: str) -> int | None:
        if value == "all":
            return None
        return Number(1, N0)(value, name)


@dataclass(frozen=True)
class Device:
    """cpu, cuda or cuda:K, where CUDA is there."""

    def __call__(self, value, name: str) -> str:
        text = value if isinstance(value, str) else ""
        index = text[5:] if text.startswith("cuda:") else None
        if text not in ("cpu", "cuda") and not (index and index.isdigit()):
            raise InputError(f"{name} must be cpu, cuda or cuda:K, got {value!r}")
        if text != "cpu":
            import torch

            if not torch.cuda.is_available():
                raise InputError(f"{name} {text} asked for, but CUDA is not available")
            if index is not None and int(index) >= torch.cuda.device_count():
                raise InputError(f"{name} {text}: only {torch.cuda.device_count()} GPU(s) seen")
        return text


@dataclass(frozen=True)
class OutPath:
    """A path to write: a real name (not "." or ".."), every existing ancestor a folder,
    the nearest one writable. `file`: a file to write, not a folder."""

    file: bool = False

    def __call__(self, value, name: str) -> str:
        if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
            raise InputError(f"{name} must be a path, got {value!r}")
        path = Path(value)
        if path.name in ("", ".", "..") or "\0" in str(value):
            raise InputError(f"{name} must name a new {'file' if self.file else 'folder'}: {value}")
        if self.file and path.is_dir():
            raise InputError(f"{name} {value}: is a folder, not a file name")
        if not self.file and path.exists() and not path.is_dir():
            raise InputError(f"{name} {value}: exists and is not a folder")
        parent = Path(os.path.abspath(path)).parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise InputError(f"{name} {value}: {parent} is not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(f"{name} {value}: cannot write in {parent}")
        return str(value)


@dataclass(frozen=True)
class SlurmTime:
    """A Slurm time limit as sbatch's --time takes it (MINUTES, MINUTES:SECONDS,
    HOURS:MINUTES:SECONDS, DAYS-HOURS[:MINUTES[:SECONDS]]) -> whole minutes, seconds
    rounded up; at least a minute, at most a year."""

    def __call__(self, value, name: str) -> int:
        text = str(value).strip() if isinstance(value, (str, int)) else ""
        match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
        if isinstance(value, bool) or not match:
            raise InputError(
                f"{name} must be a Slurm time limit (e.g. 90, 4:00:00, 2-00:00:00), got {value!r}"
            )
        parts = [int(g) for g in match.groups()[1:] if g is not None]
        if match[1] is not None or len(parts) == 3:  # [DAYS-]HOURS[:MINUTES[:SECONDS]]
            hours, minutes, seconds = (parts + [0, 0])[:3]
        else:  # MINUTES[:SECONDS]
            hours, (minutes, seconds) = 0, (parts + [0])[:2]
        seconds = ((int(match[1] or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
        minutes = -(-seconds // 60)
        if not 1 <= minutes <= 366 * 24 * 60:
            raise InputError(f"{name} must be between a minute and a year, got {value!r}")
        return minutes


@dataclass(frozen=True)
class SlurmMemory:
    """Memory as sbatch's --mem takes it: a whole number, megabytes unless K, M, G or T
    follows."""

    def __call__(self, value, name: str) -> str:
        text = str(value).strip() if isinstance(value, (str, int)) else ""
        if isinstance(value, bool) or not re.fullmatch(r"[1-9]\d*[KMGT]?", text):
            raise InputError(
                f"{name} must be memory as Slurm writes it (e.g. 64G, 500M), got {value!r}"
            )
        return text


# sbatch options bioknow sets itself: from their own options, or for submitit's bookkeeping
SBATCH_OWN = {
    "partition": "--partition",
    "account": "--account",
    "time": "--time",
    "gpus-per-node": "--gpus-per-job",
    "cpus-per-task": "--cpus-per-job",
    "mem": "--mem",
    "signal": "--signal-delay",
    **dict.fromkeys(("array", "output", "error", "open-mode", "job-name", "ntasks-per-node"), ""),
}


@dataclass(frozen=True)
class SbatchOptions:
    """Further sbatch options: KEY=VALUE (or KEY alone, a flag) texts, or a mapping ->
    {key: value or True}; none of those bioknow sets itself."""

    def __call__(self, value, name: str) -> dict:
        items = value.items() if isinstance(value, dict) else None
        if items is None:
            texts = [value] if isinstance(value, str) else value
            if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
                raise InputError(f"{name} must be KEY=VALUE texts, got {value!r}")
            items = [
                (t.partition("=")[0], t.partition("=")[2] if "=" in t else True) for t in texts
            ]
        out = {}
        for key, option in items:
            key = str(key).strip().lstrip("-")
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key):
                raise InputError(f"{name}: {key!r} is not an sbatch option name")
            if option is not True:
                option = Text()(option, f"{name} {key}")
            key = key.replace("_", "-")
            if key in SBATCH_OWN:
                own = SBATCH_OWN[key]
                why = f"use {own}" if own else "bioknow sets it"
                raise InputError(f"{name} {key}: {why}")
            out[key] = option
        return out


SEED = Number(0, SEED_MAX)
POSITIVE = Number(1, MAX_STEPS)
GPUS = Number(1, 1024)

GENERATE = {
    "n": Number(1, N0),
    "seed": SEED,
    "out": OutPath(),
    "sample": Number(0, N0),
    "vocab_size": Number(320, 65536),
    "renderings": Number(1, 40),
    "k": Number(1, N0),
    "c": Number(1, N0),
    "d": Number(1, 10**15),
    "l": Number(1, N0),
    "t": Number(1, MAX_T),
    "length": Number(1, 511),  # random: symbols per sequence, a unit within one window
    "symbols": Number(2, MAX_T),  # random: alphabet size
    "fields": InPath(),
    "tokenizer": InPath(),
    "rewriter": InPath(),
}
TRAIN = {
    "data": InPath(),
    "model": Text(),
    "exposures": Number(1, MAX_EXPOSURES),
    "out": OutPath(),
    "batch": Number(1, 10**6),
    "lr": Number(0, 1, real=True, above=True),
    "wd": Number(0, 10, real=True),
    "warmup": Number(0, MAX_STEPS),
    "seed": SEED,
    "device": Device(),
    "compile": Flag(),
    "cuda_graphs": Flag(),
    "precision": Choice(("bf16", "float32")),
    "junk_fraction": Number(0, 1, real=True, below=True),
    "junk_n": Number(1, N0),
    "useful_prefix": Text(),
    "log_every": POSITIVE,
    "checkpoint_every": POSITIVE,
    "stop_after": POSITIVE,
    "tracker": Choice(("none", "tensorboard", "wandb")),
}
EVAL = {
    "people": People(),
    "seed": SEED,
    "quantize": Choice(("none", "int8", "int4")),
    "method": Choice(("gptq", "rtn")),
    "eval_batch": Number(1, 1 << 16),
    "device": Device(),
    "out": OutPath(file=True),
    "compile": Flag(),
}
PROBE = {
    "people": Number(2, N0),
    "seed": SEED,
    "epochs": Number(1, 10**5),
    "batch": Number(1, 1 << 16),
    "rank": Number(1, 1 << 12),
    "embedding_rank": Number(0, 1 << 16),
    "device": Device(),
}
# the probe's fine-tune: epochs over the train half's QA, batch, LoRA ranks (query/value,
# embedding)
PROBE_DEFAULTS = {"seed": 0, "epochs": 60, "batch": 64, "rank": 8, "embedding_rank": 128}
CORPUS = {
    "exposures": Number(1, MAX_EXPOSURES),
    "out": OutPath(),
    "format": Choice(("bin", "parquet")),
    "seed": SEED,
}
SLURM = {
    "partition": Text(),
    "account": Text(),
    "time": SlurmTime(),
    "gpus_per_job": Number(0, 1024),
    "cpus_per_job": Number(1, 100_000),
    "mem": SlurmMemory(),
    "sbatch": SbatchOptions(),
    "max_jobs": Number(1, 1_000_000),
    "signal_delay": Number(10, 86_400),
}
SWEEP = {
    "out": OutPath(),
    "device": Choice(("cpu", "cuda")),
    "per_gpu": Number(1, 64),
    "cpu_slots": Number(1, 64),
    "launcher": Choice(("local", "slurm")),
    "max_points": Number(1, 10**12),
    **SLURM,
}
PLAN = {"device": Choice(("cpu", "h100", "h200", "a100")), "gpus": GPUS}
PLOT = {"out": OutPath(file=True), "dpi": Number(50, 1200)}
EXPORT = {"out": OutPath()}
SCHEMAS = {
    "generate": GENERATE,
    "train": TRAIN,
    "eval": EVAL,
    "probe": PROBE,
    "corpus": CORPUS,
    "sweep": SWEEP,
    "plan": PLAN,
    "plot": PLOT,
    "export": EXPORT,
}


def check(schema: dict, values: dict, prefix: str = "") -> dict:
    """The values checked by their rules (None: not given, kept as None); an option the
    schema lacks is refused. `prefix` names them: "--" on the command line."""
    unknown = sorted(set(values) - set(schema))
    if unknown:
        raise InputError(f"unknown option(s): {', '.join(prefix + k for k in unknown)}")
    out = {}
    for key, value in values.items():
        name = prefix + (key.replace("_", "-") if prefix == "--" else key)
        out[key] = None if value is None else schema[key](value, name)
    return out


def arguments(command: str, args: dict) -> dict:
    """A subcommand's parsed arguments (argparse's dest names), checked by its schema;
    arguments outside the schema (folders to read, flags) pass unchanged."""
    schema = SCHEMAS.get(command, {})
    mine = {k: v for k, v in args.items() if k in schema}
    return {**args, **check(schema, mine, "--")}


def _gb(n: float) -> str:
    return f"{n / 2**30:,.1f} GB"


def memory(device: str = "cpu") -> int:
    """Bytes of memory of the device: the machine's RAM, or the GPU's."""
    if device.startswith("cuda"):
        import torch

        index = int(device[5:]) if device.startswith("cuda:") else torch.cuda.current_device()
        return torch.cuda.get_device_properties(index).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def fits_memory(needed: float, what: str, device: str = "cpu") -> None:
    """Refuse a request whose estimated memory exceeds the device's."""
    have = memory(device)
    if needed > have:
        where = "this machine" if device == "cpu" else device
        raise InputError(f"{what} needs about {_gb(needed)} of memory; {where} has {_gb(have)}")


def fits_disk(needed: float, path, what: str) -> None:
    """Refuse a write whose estimated size exceeds the free space where it goes."""
    where = Path(os.path.abspath(path))
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    if needed > free:
        raise InputError(f"{what} needs about {_gb(needed)} of disk; {where} has {_gb(free)} free")
