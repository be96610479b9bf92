"""Sweeps on a Slurm cluster (docs/design.md §11): a grid's points as a Slurm job array,
submitted through submitit.

    DIR/slurm/jobs.json       each point's latest Slurm job (point id -> job id)
    DIR/slurm/ended/ID.json   how that job left the point: its error (none when done)
    DIR/slurm/submitit/       submitit's files: the sbatch script, the pickled tasks and each
                              job's log (JOB_0_log.out, JOB_0_log.err)

The sweep folder must be on a filesystem that the submitting machine and the nodes share,
and the nodes must see the same Python environment. Datasets are generated before the
array is submitted. Each array task runs its points at once, each in a slot of its job
(one per GPU, or per `gpus_per_point` GPUs, times `per_gpu`; or `cpu_slots` on the CPU),
with the commands a local sweep runs. Running the sweep again skips finished points and
those whose job is still queued or running, and submits the rest: interrupted ones resume
from their checkpoints, failed ones are tried again.

Time limits and preemption: the jobs ask Slurm for submitit's warning signal (USR2)
`signal_delay` seconds before their limit. On it a task sends SIGTERM to its commands (a
`bioknow train` checkpoints and exits; the commands never see the warning itself), waits
for them, and has submitit requeue it; the requeued job resumes from the checkpoints. A
SIGTERM from Slurm itself (preemption, `scancel --signal=TERM`) reaches the commands
directly: they checkpoint and stop, the task ends, and the point is interrupted until the
sweep runs again (or Slurm requeues the job).
"""

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bioknow.base import atomic, integrity, process, validate
from bioknow.base.errors import InputError
from bioknow.study import sweep as sweeps

JOBS = Path("slurm", "jobs.json")
ENDED = Path("slurm", "ended")
SUBMITIT = Path("slurm", "submitit")
POLL = 30.0  # seconds between two looks at the queue (BIOKNOW_SLURM_POLL_SECONDS)
REQUEUES = 100  # time limits a task may reach, each time requeued, before it gives up
QUEUE_TRIES = 10  # squeue failures in a row that end the wait
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SPECIAL_EXIT"}
STATES = ("done", "running", "queued", "interrupted", "failed", "waiting")


def poll_seconds() -> float:
    try:
        return max(0.1, float(os.environ.get("BIOKNOW_SLURM_POLL_SECONDS", POLL)))
    except ValueError:
        return POLL


@dataclass
class Launcher:
    """Runs a sweep's points as a Slurm job array; for `bioknow.study.sweep.run_sweep`. The
    options are sbatch's (`time` a Slurm time limit, `mem` e.g. "64G", `sbatch` further
    KEY=VALUE options); `max_jobs` caps the array's tasks running at once; `wait` False
    returns once the array is submitted."""

    time: int | str | None = None
    partition: str | None = None
    account: str | None = None
    gpus_per_job: int | None = None
    cpus_per_job: int | None = None
    mem: str | None = None
    sbatch: dict | list = field(default_factory=dict)
    max_jobs: int | None = None
    signal_delay: int = 90
    device: str | None = None
    per_gpu: int = 1
    cpu_slots: int = 1
    wait: bool = True

    def __post_init__(self):
        names = [*validate.SLURM, "device", "per_gpu", "cpu_slots"]
        values = {k: getattr(self, k) for k in names}
        checked = validate.check(validate.SWEEP, values, "--")
        for key, value in checked.items():
            setattr(self, key, value)
        if self.time is None:
            raise InputError("--launcher slurm needs --time, each job's time limit (e.g. 4:00:00)")
        if self.signal_delay >= self.time * 60:
            raise InputError(f"--signal-delay {self.signal_delay} s is not shorter than --time")

    def gpus(self, config: dict) -> int:
        """GPUs per job: --gpus-per-job, else none on the CPU (--device cpu, or the config's
        train device), else one point's."""
        per_point = config["gpus_per_point"]
        train_device = (config.get("train") or {}).get("device")
        cpu = "--device cpu" if self.device == "cpu" else None
        cpu = cpu or ("the config's train device cpu" if train_device == "cpu" else None)
        gpus = self.gpus_per_job
        if gpus is None:
            gpus = 0 if cpu else per_point
        if cpu and gpus:
            raise InputError(f"{cpu} with --gpus-per-job {gpus}")
        if self.device == "cuda" and not gpus:
            raise InputError("--device cuda with --gpus-per-job 0")
        if gpus % per_point:
            raise InputError(f"--gpus-per-job {gpus}: not a multiple of gpus_per_point {per_point}")
        return gpus

    def check(self, config: dict) -> None:
        """Refuse, before anything is written, options that do not fit the grid, and a
        machine without Slurm."""
        self.gpus(config)
        if shutil.which("sbatch") is None:
            raise InputError("--launcher slurm: Slurm's sbatch is not on PATH here")

    def __call__(self, grid, pending, sweep: Path, config: dict, bar) -> dict:
        """Submit the pending points not already queued or running; with `wait`, wait until
        none is; every point's (state, error)."""
        quantize = sweeps.quantize_settings(config)
        jobs = read_jobs(sweep)
        live = queue() if jobs else {}
        todo = [p for p in pending if jobs.get(p.id) not in live]
        if todo:
            jobs.update(self.submit(todo, sweep, config))
            atomic.write_json(sweep / JOBS, jobs)
        if self.wait:
            wait(sweep, grid, config, quantize, set(jobs.values()), bar)
        known = states(sweep, grid, config, quantize)
        return {s["point"]: (s["state"], s["error"]) for s in known}

    def submit(self, todo, sweep: Path, config: dict) -> dict[str, str]:
        """The points as one job array, as many a task as a job has slots; their job ids."""
        from submitit.core.utils import FailedJobError, FailedSubmissionError

        per_point = config["gpus_per_point"]
        gpus = self.gpus(config)
        size = gpus // per_point * self.per_gpu if gpus else self.cpu_slots
        todo = sorted(todo, key=sweeps.cost, reverse=True)  # alike points share a job
        chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
        executor = self.executor(sweep, gpus, len(chunks))
        (sweep / ENDED).mkdir(parents=True, exist_ok=True)
        device = "cuda" if gpus else "cpu"
        folder = str(sweep.resolve())
        try:
            with executor.batch():
                submitted = [
                    executor.submit(
                        Task(folder, [p.id for p in c], device, self.per_gpu, self.cpu_slots)
                    )
                    for c in chunks
                ]
        except (FailedJobError, FailedSubmissionError, OSError) as e:
            lines = [x for x in str(e).splitlines() if x.strip()] or [type(e).__name__]
            raise InputError(f"Slurm refused the jobs: {lines[-1].strip()}") from None
        return {p.id: job.job_id for job, c in zip(submitted, chunks, strict=True) for p in c}

    def executor(self, sweep: Path, gpus: int, tasks: int):
        """A submitit executor holding the jobs' sbatch options."""
        import submitit

        try:
            executor = submitit.SlurmExecutor(folder=sweep / SUBMITIT, max_num_timeout=REQUEUES)
        except RuntimeError:
            raise InputError("--launcher slurm: Slurm's srun is not on PATH here") from None
        executor.update_parameters(
            job_name=f"bioknow-{sweep.resolve().name}",
            time=self.time,
            signal_delay_s=self.signal_delay,
            partition=self.partition,
            account=self.account,
            gpus_per_node=gpus or None,
            cpus_per_task=self.cpus_per_job,
            mem=self.mem,
            array_parallelism=self.max_jobs or tasks,
            additional_parameters=dict(self.sbatch),
        )
        return executor


class Task:
    """One array task, run by submitit in its job: some points of a sweep at once, each in
    a slot of the job. submitit calls `checkpoint` on the warning signal."""

    def __init__(self, sweep: str, ids: list[str], device: str, per_gpu: int, cpu_slots: int):
        self.args = (sweep, ids, device, per_gpu, cpu_slots)
        self.children = None

    def __call__(self) -> dict[str, str | None]:
        import submitit

        folder, ids, device, per_gpu, cpu_slots = self.args
        sweep = Path(folder)
        raw = integrity.read_json(sweep / "sweep.json")["config"]
        config = sweeps.check_config(raw)
        mine = [p for p in sweeps.points(raw) if p.id in ids]
        warning = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)
        self.children = process.Children(shield=(warning,))
        signal.signal(signal.SIGTERM, lambda *_: self.children.stop())
        job = submitit.JobEnvironment().job_id

        def ended(point, error: str | None) -> None:
            stopped = error is not None and self.children.stopping
            record = {"job": job, "error": error, "stopped": stopped}
            atomic.write_json(sweep / ENDED / f"{point.id}.json", record)

        try:
            workers = sweeps.workers(sweep, config, device, per_gpu, cpu_slots)
        except InputError as e:
            for point in mine:
                ended(point, str(e))
            raise
        return sweeps.run_points(mine, sweep, config, workers, None, self.children, ended)

    def checkpoint(self):
        """On the warning before the time limit (or preemption): stop the commands, which
        checkpoint, and have submitit requeue the task."""
        import submitit

        if self.children is not None:
            self.children.stop()
        return submitit.helpers.DelayedSubmission(Task(*self.args))


def read_jobs(sweep: Path) -> dict[str, str]:
    return integrity.read_json(sweep / JOBS) if (sweep / JOBS).is_file() else {}


def queue() -> dict[str, str]:
    """This user's jobs in the Slurm queue: job id (array tasks as ARRAY_TASK) -> state."""
    if shutil.which("squeue") is None:
        raise InputError("this sweep has Slurm jobs, but Slurm's squeue is not on PATH here")
    cmd = ["squeue", "--noheader", "--array", f"--user={os.getuid()}", "--format=%i %T"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise InputError("squeue did not answer in 120 s") from None
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines() or [f"status {done.returncode}"]
        raise InputError(f"squeue failed: {why[-1]}")
    return dict(line.split()[:2] for line in done.stdout.splitlines() if len(line.split()) >= 2)


def wait(sweep: Path, grid, config: dict, quantize: list[str], jobs: set[str], bar) -> None:
    """Wait until none of `jobs` is queued or running, counting points as they finish and
    writing the table so far."""
    done = sum(sweeps.point_done(p, sweep, config, quantize) for p in grid)
    failures = 0
    while True:
        try:
            live = {j: s for j, s in queue().items() if j in jobs}
            failures = 0
        except InputError:
            failures += 1
            if failures == QUEUE_TRIES:
                raise
            live = dict.fromkeys(jobs, "?")  # no answer this time: still waiting
        now = sum(sweeps.point_done(p, sweep, config, quantize) for p in grid)
        if now != done:
            now_states = states(sweep, grid, config, quantize)
            known = {s["point"]: (s["state"], s["error"]) for s in now_states}
            sweeps.table_rows(grid, sweep, config, quantize, known)
        bar.update(now - done)
        done = now
        queued = sum(s in QUEUED for s in live.values())
        bar.set_postfix(queued=queued, running=len(live) - queued)
        if not live:
            return
        bar.tick()
        time.sleep(poll_seconds())


def states(sweep: Path, grid, config: dict, quantize: list[str], failed=()) -> list[dict]:
    """Each point's state (one of STATES), Slurm job, share trained and error. `failed`:
    the points a local sweep reported as failed."""
    jobs = read_jobs(sweep)
    live = queue() if jobs else {}
    out = []
    for point in grid:
        run = sweep / "runs" / point.id
        job = jobs.get(point.id)
        state, error = point_state(sweep, point, config, quantize, job, live, point.id in failed)
        trained = sweeps.trained_share(run)
        out.append({"point": point.id, "state": state, "job": job, "trained": trained})
        out[-1]["error"] = error
    return out


def point_state(sweep: Path, point, config: dict, quantize, job, live: dict, failed: bool) -> tuple:
    """(state, error) of one point, from its run folder, its job and how the job ended."""
    run = sweep / "runs" / point.id
    log = sweep / "logs" / f"{point.id}.log"
    if sweeps.point_done(point, sweep, config, quantize):
        return "done", None
    if job in live:
        return ("queued" if live[job] in QUEUED else "running"), None
    if job is not None:
        path = sweep / ENDED / f"{point.id}.json"
        end = integrity.read_json(path) if path.is_file() else {}
        if end.get("job") != job or end.get("error") is None:
            err = sweep / SUBMITIT / f"{job}_0_log.err"
            return "failed", f"job {job} ended without finishing the point (see {err})"
        return ("interrupted" if end.get("stopped") else "failed"), end["error"]
    if process.holder(run) is not None or process.held(log):
        return "running", None
    if failed:
        return "failed", f"see {log}"
    started = (run / "config.json").is_file() or log.is_file()
    return ("interrupted" if started else "waiting"), None


def status(out) -> list[dict]:
    """`bioknow sweep DIR --status`: every point's state, job, share trained and error."""
    sweep = Path(out)
    if not (sweep / "sweep.json").is_file():
        raise InputError(f"{out}: not a sweep folder (no sweep.json)")
    record = integrity.read_json(sweep / "sweep.json")
    raw = record["config"]
    config = sweeps.check_config(raw)
    failed = set(record.get("failed", []))
    return states(sweep, sweeps.points(raw), config, sweeps.quantize_settings(config), failed)
