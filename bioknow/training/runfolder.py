"""The run folder: checkpoints, the final weights, metrics, and their checks.

    RUN/bioknow-folder.json               what the folder is: a run (`bioknow.base.ownership`)
    RUN/config.json                       model, recipe and data, resolved
    RUN/integrity.json                    size and SHA-256 of every file below but metrics
    RUN/lock                              the pid of the process writing the run
    RUN/checkpoints/step-NNNNNNNN/        model.safetensors, optimizer.pt, state.json
    RUN/model.safetensors                 the final weights
    RUN/metrics.jsonl                     step, tokens, loss, lr, tokens/s; appended
    RUN/eval*.json                        evaluation reports, named by what they are
    RUN/probe*.json                       knowledge-extraction probe reports, the same way

Every file but metrics.jsonl is recorded in integrity.json when written and checked
against it when read; a checkpoint's state records the size and SHA-256 of metrics.jsonl
so far and the settings it was trained with. A checkpoint is written under a temporary
name, renamed, then recorded: the newest checkpoint is the one integrity.json records with
the highest step (the record is the run's progress pointer, nothing beside it), so a run
killed at any point resumes from a complete, recorded checkpoint. Finishing (copying the
last checkpoint's weights to RUN/model.safetensors) is idempotent, and `--resume` of a
finished run completes it. Every report records the digest of the weights it measured:
once the run trains on, the report is stale (`stale_reports`).
"""

import hashlib
import json
import os
import pickle
import re
import shutil
import warnings
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from bioknow.base import atomic, consistency, integrity
from bioknow.base.errors import InputError

FILES = ("model.safetensors", "optimizer.pt", "state.json")
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
STEP = re.compile(r"step-\d{8}")


def report_name(
    n: int, people: int | None = None, seed: int = 0, quantize: str = "none", method: str = "gptq"
) -> str:
    """The file name of an evaluation report, by what it is: `eval.json` (all N people),
    `eval-people20-seed0.json` (a seeded sample), `eval-int8.json`, `eval-int4-rtn.json`
    (quantized; GPTQ calibrates on a seeded sample, so `eval-seed3-int8.json` for seed 3),
    `eval-people20-seed0-int8.json`. A sample of N or more people is all of them."""
    parts = ["eval"]
    if people is not None and people < n:
        parts += [f"people{people}", f"seed{seed}"]
    elif quantize != "none" and method == "gptq" and seed:
        parts.append(f"seed{seed}")
    if quantize != "none":
        parts.append(quantize if method == "gptq" else f"{quantize}-{method}")
    return "-".join(parts) + ".json"


def probe_name(n: int, people: int | None = None, seed: int = 0) -> str:
    """The file name of a probe report, by what it is: `probe.json` (all N people, split
    by seed 0), `probe-seed1.json` (all, split by seed 1), `probe-people200-seed0.json` (a
    seeded sample of 200)."""
    if people is not None and people < n:
        return f"probe-people{people}-seed{seed}.json"
    return f"probe-seed{seed}.json" if seed else "probe.json"


def is_probe(name: str) -> bool:
    """Whether a run's recorded file is a probe report."""
    return "/" not in name and name.startswith("probe") and name.endswith(".json")


def is_report(name: str) -> bool:
    """Whether a run's recorded file is an evaluation report."""
    return "/" not in name and name.startswith("eval") and name.endswith(".json")


def latest_checkpoint(run: Path) -> Path | None:
    """The newest complete checkpoint (None before the first): the highest step whose
    files integrity.json records, all of them. The sealed record alone says how far a run
    got; a file beside it (an older bioknow's `checkpoints/latest`) is never read."""
    steps: dict[str, set] = {}
    for name in integrity.load_record(run):
        parts = name.split("/")
        if len(parts) == 3 and parts[0] == "checkpoints" and STEP.fullmatch(parts[1]):
            steps.setdefault(parts[1], set()).add(parts[2])
    complete = sorted(step for step, files in steps.items() if files >= set(FILES))
    return Path(run) / "checkpoints" / complete[-1] if complete else None


def rel(path: Path, run: Path) -> str:
    return Path(path).relative_to(run).as_posix()


def fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def save_checkpoint(run: Path, model, opt, state: dict) -> None:
    """Write a complete checkpoint under a temporary name, rename it, record its digests
    (from then on it is the newest), then drop older ones."""
    folder = run / "checkpoints"
    name = f"step-{state['step']:08d}"
    tmp = atomic.temp_path(folder / name)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    atomic.write_json(tmp / "state.json", state)
    for f in FILES[:2]:
        fsync(tmp / f)
    atomic.readable(tmp)
    digests = {f"checkpoints/{name}/{f}": integrity.digest(tmp / f) for f in FILES}
    shutil.rmtree(folder / name, ignore_errors=True)
    os.replace(tmp, folder / name)
    integrity.update_record(run, add=digests)
    (folder / "latest").unlink(missing_ok=True)  # an older bioknow's pointer, now stale
    old = [p for p in folder.glob("step-*") if p.name != name]
    integrity.update_record(run, remove=[f"checkpoints/{p.name}/{f}" for p in old for f in FILES])
    for p in old:
        shutil.rmtree(p, ignore_errors=True)


def finish(run: Path) -> None:
    """Copy the last checkpoint's weights to RUN/model.safetensors and record them.
    Idempotent: a run killed before or after any of these steps is finished by rerunning
    it."""
    source = integrity.check_run_file(run, rel(latest_checkpoint(run), run) + "/model.safetensors")
    tmp = atomic.temp_path(run / "model.safetensors")
    shutil.copyfile(source, tmp)
    fsync(tmp)
    os.replace(tmp, run / "model.safetensors")
    integrity.update_record(run, {"model.safetensors": integrity.digest(run / "model.safetensors")})


def ensure_finished(run: Path) -> None:
    """For a finished run: check its final weights, or write them if an interruption
    left them missing or unrecorded."""
    if "model.safetensors" in integrity.load_record(run):
        integrity.check_run_file(run, "model.safetensors")
    else:
        finish(run)


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load_weights(model: torch.nn.Module, path: Path, device="cpu") -> None:
    """Load safetensors weights into the model, or an InputError naming the file."""
    try:
        load_model(model, str(path), device=str(device))
    except (SafetensorError, RuntimeError, OSError, ValueError, KeyError) as e:
        raise InputError(f"{path}: not loadable weights for this model ({first_line(e)})") from None


def load_optimizer(opt: torch.optim.Optimizer, path: Path, device) -> None:
    """Load an optimizer state with the weights-only unpickler; anything else (a damaged
    file, a pickle that would run code) is an InputError naming the file."""
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning: refused below
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, weights_only=True, map_location=device)
        opt.load_state_dict(state)
    except pickle.UnpicklingError:
        raise InputError(f"{path}: refused, it holds more than tensors and numbers") from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise InputError(f"{path}: not a readable optimizer state ({first_line(e)})") from None


def metrics_prefix(run: Path, state: dict) -> bytes:
    """The bytes of metrics.jsonl up to the state's checkpoint, checked against the size
    and SHA-256 the checkpoint recorded."""
    path = Path(run) / "metrics.jsonl"
    size = state.get("metrics_bytes", 0)
    data = integrity.read_bytes(path)[:size] if path.is_file() else b""
    if len(data) < size:
        raise InputError(
            f"{path}: shorter ({len(data)} bytes) than at the last checkpoint ({size}); "
            "lines were lost"
        )
    if state.get("metrics_sha256", EMPTY_SHA256) != hashlib.sha256(data).hexdigest():
        raise InputError(f"{path}: differs from its checksum at the last checkpoint")
    return data


class MetricsLog:
    """RUN/metrics.jsonl, appended a line at a time (flushed and fsync'd), with a running
    SHA-256; on resume it is checked and cut back to its size at the checkpoint."""

    def __init__(self, run: Path, state: dict):
        self.path = run / "metrics.jsonl"
        prefix = metrics_prefix(run, state)
        self.digest = hashlib.sha256(prefix)
        self.file = open(self.path, "r+b" if self.path.is_file() else "w+b")
        self.file.truncate(len(prefix))
        self.file.seek(len(prefix))

    def append(self, line: dict) -> None:
        data = (json.dumps(line) + "\n").encode()
        self.file.write(data)
        self.file.flush()
        os.fsync(self.file.fileno())
        self.digest.update(data)

    def mark(self, state: dict) -> None:
        """Record in a checkpoint's state how far the metrics go, and their digest."""
        state.update(metrics_bytes=self.file.tell(), metrics_sha256=self.digest.hexdigest())

    def close(self) -> None:
        self.file.close()


def read_metrics(run: Path) -> list[dict]:
    """The lines of metrics.jsonl; a torn last line (a write cut short) is skipped, any
    other unreadable line is an InputError naming the file."""
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = integrity.read_bytes(path).split(b"\n")
    out = []
    for number, line in enumerate(lines, 1):
        try:
            if line:
                out.append(json.loads(line))
        except (UnicodeDecodeError, json.JSONDecodeError):
            if number < len(lines):  # the last piece has no newline: a torn line
                raise InputError(f"{path} line {number}: not valid JSON") from None
    return out


def read_config(run: Path) -> dict:
    """A run's config.json, checked; a folder that is not a run is an InputError saying
    what it is (an export, a transformers model) and what to run instead."""
    run = Path(run)
    if not (run / "config.json").is_file():
        not_a_dataset(run)
        raise InputError(f"{run}: not a bioknow run (no config.json)")
    if not (run / integrity.RECORD).is_file():
        not_a_run(run)
    return integrity.read_run_json(run, "config.json")


def not_a_dataset(folder: Path) -> None:
    """Refuse a dataset folder (its sealed manifest.json) given for a run, with the command
    that trains a model on it."""
    if (folder / "manifest.json").is_file() and (folder / integrity.SEAL).is_file():
        raise InputError(
            f"{folder}: a bioknow dataset, not a run; train a model on it first with: "
            f"bioknow train --data {folder} --model gpt2-4-4 --exposures 100 --out runs/NAME"
        )


def not_a_run(folder: Path) -> None:
    """Refuse a transformers model folder (a `bioknow export` or any other) given for a
    run, naming what it is and the command that reads it."""
    about = folder / "bioknow.json"
    if about.is_file():
        source = integrity.read_json(about)
        data = source.get("data", "DATA") if isinstance(source, dict) else "DATA"
        origin = f" of run {source['run']}" if isinstance(source, dict) and "run" in source else ""
        raise InputError(
            f"{folder}: a transformers export{origin}, not a run; evaluate it with: "
            f"bioknow eval --hf-model {folder} --data {data}"
        )
    config = integrity.read_json(folder / "config.json")
    if isinstance(config, dict) and ("architectures" in config or "model_type" in config):
        raise InputError(
            f"{folder}: a transformers model, not a run; evaluate it with: "
            f"bioknow eval --hf-model {folder} --data DATASET"
        )


def read_state(run: Path, checkpoint: Path | None = None) -> dict:
    """The state of the latest checkpoint (step 0 before the first), checked, and
    checked against config.json (`consistency.check_state`)."""
    checkpoint = checkpoint or latest_checkpoint(run)
    if checkpoint is None:
        return {"step": 0, "finished": False, "loss": None}
    state = integrity.read_run_json(run, rel(checkpoint, run) + "/state.json")
    consistency.check_state(run, read_config(run), state)
    return state


def weights_rel(run: Path) -> str:
    """The run's current weights, as a path in the run: the final weights if recorded,
    else the latest checkpoint's."""
    if "model.safetensors" in integrity.load_record(run):
        return "model.safetensors"
    checkpoint = latest_checkpoint(run)
    if checkpoint is None:
        raise InputError(f"{run}: no weights yet (no checkpoint)")
    return rel(checkpoint, run) + "/model.safetensors"


def weights_file(run: Path) -> Path:
    """The final weights if recorded, else the latest checkpoint's, checked."""
    return integrity.check_run_file(run, weights_rel(run))


def weights_digest(run: Path) -> dict:
    """What a report records of the weights it measured: their file and SHA-256 (the
    digest integrity.json holds for them)."""
    name = weights_rel(run)
    return {"file": name, "sha256": integrity.covered(run, name)["sha256"]}


def stale_reports(run: Path) -> list[str]:
    """The run's evaluation and probe reports that did not measure its current weights
    (the run trained on since) or do not say which they measured (an older bioknow's):
    `info` marks them, a sweep evaluates again instead of using them."""
    files = integrity.load_record(run)
    names = [name for name in files if is_report(name) or is_probe(name)]
    try:
        current = weights_digest(run)["sha256"]
    except InputError:
        return names
    out = []
    for name in names:
        weights = integrity.read_run_json(run, name).get("weights")
        if not isinstance(weights, dict) or weights.get("sha256") != current:
            out.append(name)
    return out


def current_report(run: Path, name: str) -> dict:
    """A run's report, checked against the run's record and refused unless it measured the
    run's current weights: a table of results never shows a stale figure."""
    run = Path(run)
    if name in stale_reports(run):
        raise InputError(
            f"{run / name}: measured other weights than the run's current ones, or does not "
            "say which (stale); evaluate the run again"
        )
    return integrity.read_run_json(run, name)


def verify_files(run: Path) -> dict:
    """Check every file of a run: the record, each recorded file, the latest checkpoint
    and the metrics; a summary, or an InputError naming the first bad file."""
    run = Path(run)
    files = integrity.load_record(run)
    integrity.covered(run, "config.json")
    for name in sorted(files):
        integrity.check_run_file(run, name)
    checkpoint = latest_checkpoint(run)
    if checkpoint is not None:
        for f in FILES:
            integrity.covered(run, f"{rel(checkpoint, run)}/{f}")
        metrics_prefix(run, read_state(run, checkpoint))
    return {"files": len(files), "metrics_lines": len(read_metrics(run))}


def info(run, verify: bool = False) -> dict:
    """What a run folder holds: its config, how far it got (the latest state) and its
    evaluation and probe reports by name, each checked against the run's integrity.json (with
    `verify`, every file: `verify_files`) and each report's figures against each other;
    `stale`: the reports that measured other weights than the run's current ones."""
    run = Path(run)
    config = read_config(run)
    checked = verify_files(run) if verify else None
    recorded = integrity.load_record(run)
    names = [name for name in recorded if is_report(name)]
    reports = sorted(names, key=lambda name: (name != "eval.json", name))  # all people first
    probes = sorted(name for name in recorded if is_probe(name))
    about = {
        "path": str(run),
        "config": config,
        "state": read_state(run),
        "evals": {name: integrity.read_run_json(run, name) for name in reports},
        "probes": {name: integrity.read_run_json(run, name) for name in probes},
        "stale": stale_reports(run),
    }
    for name, report in about["evals"].items():
        consistency.check_report(run / name, report, config["params"]["P"])
    if checked is not None:
        about["verified"] = checked
    return about
