"""Experiment tracking: a run's curves and reports in TensorBoard or Weights & Biases.

`train --tracker tensorboard` writes event files to RUN/tensorboard/; `--tracker wandb`
logs to a W&B run named after the run folder (offline with WANDB_MODE=offline, its local
files under RUN/wandb/), in the project WANDB_PROJECT (default "bioknow") and the group
WANDB_RUN_GROUP (a sweep sets it to the sweep folder's name). Both get the run's config,
then the loss, learning rate, tokens and tokens/s of every metrics line (`train/...` at
its step), and every report `eval` writes (`eval/R`, `eval/bits`, `eval/accuracy`, ...,
named after the report's file: TensorBoard scalars at the run's step, the W&B run's
summary). The tracker is part of the run (config.json, "tracker"): `--resume` continues
the same TensorBoard log, purging what a killed process logged after its last
checkpoint, or the same W&B run (its id, resume="allow"), so no step is logged twice.
"""

import importlib.util
import json
import math
import os
import secrets
from pathlib import Path

from bioknow.base.errors import InputError

KINDS = ("none", "tensorboard", "wandb")
PACKAGES = {"tensorboard": "tensorboard", "wandb": "bioknow[wandb]"}  # what to install
TRAIN_SCALARS = ("loss", "lr", "tokens", "tokens_per_s")  # of a metrics line


def check(kind: str | None) -> None:
    """Refuse a tracker whose package is not installed."""
    if kind in PACKAGES and importlib.util.find_spec(kind) is None:
        raise InputError(
            f"tracking with {kind} needs the {kind} package: pip install '{PACKAGES[kind]}'"
        )


def wandb_credentials() -> None:
    """Refuse `--tracker wandb` online without credentials (WANDB_API_KEY, an identity
    token file, `wandb login`'s .netrc entry or a key in wandb's settings), before the run
    writes anything; offline or disabled (WANDB_MODE, `wandb offline`) needs none."""
    import netrc
    from urllib.parse import urlparse

    import wandb

    setup = wandb.setup().settings
    if setup.mode in ("offline", "dryrun", "disabled") or setup.api_key:
        return
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        if netrc.netrc(path).authenticators(urlparse(setup.base_url).hostname or ""):
            return
    except (OSError, netrc.NetrcParseError):
        pass
    raise InputError(
        "--tracker wandb: no W&B credentials (WANDB_API_KEY, or `wandb login`); or set "
        "WANDB_MODE=offline and sync later"
    )


def settings(kind: str | None, run: Path) -> dict | None:
    """What a new run records of its tracker in config.json (None: no tracker); W&B's
    credentials are checked first."""
    if kind in (None, "none"):
        return None
    check(kind)
    if kind == "wandb":
        wandb_credentials()
    if kind == "tensorboard":
        return {"kind": kind, "dir": "tensorboard"}
    return {
        "kind": kind,
        "project": os.environ.get("WANDB_PROJECT", "bioknow"),
        "group": os.environ.get("WANDB_RUN_GROUP"),
        "name": Path(run).resolve().name,
        "id": secrets.token_hex(4),
    }


def describe(tracker: dict, run: Path) -> str:
    """Where a run's tracker logs, for people."""
    if tracker["kind"] == "tensorboard":
        return (
            f"TensorBoard event files in {Path(run) / tracker['dir']} (tensorboard --logdir {run})"
        )
    group = f", group {tracker['group']}" if tracker.get("group") else ""
    return f"W&B run {tracker['project']}/{tracker['id']} ({tracker['name']}{group})"


def scalars(report: dict, prefix: str) -> dict[str, float]:
    """The numbers of a report as flat names: prefix/R, prefix/employer/bits, and a
    [low, high] interval as prefix/R_ci95_low and prefix/R_ci95_high."""
    out = {}
    for key, value in report.items():
        name = f"{prefix}/{key}"
        if isinstance(value, dict):
            out.update(scalars(value, name))
        elif isinstance(value, list) and len(value) == 2:
            out.update(scalars({f"{key}_low": value[0], f"{key}_high": value[1]}, prefix))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(value):
                out[name] = float(value)
    return out


class Tracker:
    """Where a run's curves go; this one: nowhere (a run without a tracker)."""

    def log(self, line: dict) -> None:
        """A metrics line of training, at its step."""

    def report(self, name: str, report: dict, step: int) -> None:
        """An evaluation report (file name `name`) of the weights of `step`."""

    def close(self) -> None:
        pass


class TensorBoard(Tracker):
    """Event files in RUN/tensorboard/, one file per process that wrote to them."""

    def __init__(self, run: Path, tracker: dict, config: dict | None, step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        # Training from `step` hides what a killed process logged after it (its checkpoint).
        purge = None if step is None else (step + 1 if step else 0)
        self.writer = SummaryWriter(str(run / tracker["dir"]), purge_step=purge, flush_secs=30)
        if config is not None and step == 0:
            self.writer.add_text("config", f"```\n{json.dumps(config, indent=2)}\n```", 0)

    def log(self, line: dict) -> None:
        for key in TRAIN_SCALARS:
            self.writer.add_scalar(f"train/{key}", line[key], line["step"])

    def report(self, name: str, report: dict, step: int) -> None:
        for tag, value in scalars(report, name).items():
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self.writer.close()


class WandB(Tracker):
    """The run's W&B run (its local files in RUN/wandb/)."""

    def __init__(self, run: Path, tracker: dict, config: dict | None, step: int | None):
        import wandb

        try:
            self.run = wandb.init(
                project=tracker["project"],
                id=tracker["id"],
                name=tracker["name"],
                group=tracker.get("group"),
                resume="allow",
                dir=str(run),
                config=config,
                settings=wandb.Settings(console="off"),
            )
        except (wandb.errors.Error, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(
                f"--tracker wandb: cannot start the W&B run ({first}); log in with "
                "`wandb login`, or set WANDB_MODE=offline and sync later"
            ) from None

    def log(self, line: dict) -> None:
        self.run.log({f"train/{k}": line[k] for k in TRAIN_SCALARS}, step=line["step"])

    def report(self, name: str, report: dict, step: int) -> None:
        self.run.summary.update(scalars(report, name))

    def close(self) -> None:
        self.run.finish()


def open_tracker(run, config: dict, step: int | None = None) -> Tracker:
    """The tracker of a run (a silent one if it has none): for training from `step`, which
    logs the config and continues the log from there, or for a report (step None)."""
    tracker = config.get("tracker")
    if not tracker:
        return Tracker()
    check(tracker["kind"])
    kind = {"tensorboard": TensorBoard, "wandb": WandB}[tracker["kind"]]
    return kind(Path(run), tracker, None if step is None else config, step)


def log_report(run, config: dict, name: str, report: dict, step: int) -> None:
    """Log an evaluation report to the run's tracker, if it has one."""
    if config.get("tracker"):
        tracker = open_tracker(run, config)
        tracker.report(name, report, step)
        tracker.close()
