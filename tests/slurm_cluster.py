"""A single-node Slurm cluster on this machine, for the tests of `--launcher slurm`.

munged, slurmctld and slurmd run in the foreground as children of the test process, on the
loopback interface, with every file (munge key and socket, slurm.conf, state, spool, logs)
in a temporary folder; `stop` cancels what is left in the queue, stops the daemons and
removes the folder. One partition, `cpu`, of this machine's cores, no GPUs, no
accounting. Debian's `slurm-wlm` and `munge` are installed when missing (as root).
"""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd")


def installed() -> bool:
    return all(shutil.which(d) for d in (*DAEMONS, "sbatch", "squeue", "scancel"))


def install() -> str | None:
    """Install slurm-wlm and munge with apt-get if missing; None when they are there, else
    why they cannot be."""
    if installed():
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "Slurm (slurm-wlm, munge) is not installed, and installing it needs root and apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "install", "-y", "-q", *PACKAGES]
    if subprocess.run(apt, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        done = subprocess.run(apt, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            return f"apt-get install {' '.join(PACKAGES)} failed: {done.stderr.strip()[-300:]}"
    return None if installed() else "slurm-wlm installed, but its commands are not on PATH"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_line() -> str:
    """This machine as slurm.conf's NodeName line wants it (slurmd -C), on loopback."""
    found = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True)
    line = found.stdout.splitlines()[0]
    keep = ("NodeName", "CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
    parts = [p for p in line.split() if p.split("=")[0] in keep]
    return " ".join(parts) + " NodeAddr=127.0.0.1 State=UNKNOWN"


class Cluster:
    """`with Cluster(folder) as env:` a running cluster; `env` points Slurm's commands
    at it (SLURM_CONF)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.daemons: list[subprocess.Popen] = []

    def write_config(self) -> None:
        host = socket.gethostname().split(".")[0]
        node = node_line()
        name = node.split()[0].split("=")[1]
        munge = self.root / "munge"
        lines = [
            "ClusterName=bioknow-test",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "CommunicationParameters=NoInAddrAny",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            # cred_expire: a requeued job waits this long before it may start again (120 s
            # by default); short here, so that the test of requeueing stays short
            f"AuthInfo=socket={munge / 'munge.socket'},cred_expire=10",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "SchedulerType=sched/builtin",
            "SchedulerParameters=sched_interval=1",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "ReturnToService=2",
            "SlurmdParameters=config_overrides",
            "KillWait=10",
            node,
            f"PartitionName=cpu Nodes={name} Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def start_munge(self) -> None:
        munge = self.root / "munge"
        munge.mkdir(mode=0o700)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        cmd = [
            "munged",
            "--foreground",
            "--force",
            f"--socket={munge / 'munge.socket'}",
            f"--key-file={key}",
            f"--pid-file={munge / 'munged.pid'}",
            f"--log-file={munge / 'munged.log'}",
            f"--seed-file={munge / 'munged.seed'}",
        ]
        self.spawn(cmd, "munged")
        self.until(lambda: (munge / "munge.socket").exists(), "munged to open its socket")

    def spawn(self, cmd: list[str], name: str) -> None:
        out = open(self.root / f"{name}.out", "w")
        self.daemons.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT))
        out.close()

    def until(self, ready, what: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not ready():
            for d in self.daemons:
                if d.poll() is not None:
                    raise RuntimeError(f"{d.args[0]} exited ({d.returncode}): {self.logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"waited {seconds} s for {what}: {self.logs()}")
            time.sleep(0.2)

    def logs(self) -> str:
        """The end of every daemon's log, for an error message."""
        out = []
        for path in sorted(self.root.glob("*.log")) + sorted(self.root.glob("*.out")):
            out.append(f"--- {path.name}\n" + "\n".join(path.read_text().splitlines()[-15:]))
        return "\n".join(out)

    def idle(self) -> bool:
        sinfo = subprocess.run(
            ["sinfo", "--noheader", "--format=%T"], env=self.env, capture_output=True, text=True
        )
        return sinfo.returncode == 0 and sinfo.stdout.strip() == "idle"

    def start(self) -> dict:
        for folder in ("state", "spool"):
            (self.root / folder).mkdir(parents=True)
        self.start_munge()
        self.write_config()
        self.spawn(["slurmctld", "-D", "-i", "-f", str(self.conf)], "slurmctld")
        self.spawn(["slurmd", "-D", "-f", str(self.conf)], "slurmd")
        self.until(self.idle, "the node to be idle")
        return self.env

    def run(self, *cmd: str) -> str:
        """A Slurm command against this cluster; its output."""
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip()}")
        return done.stdout

    def empty(self) -> bool:
        return self.run("squeue", "--noheader").strip() == ""

    def stop(self) -> None:
        """Cancel every job, wait for the queue to empty, stop the daemons, remove the folder."""
        try:
            if self.daemons and all(d.poll() is None for d in self.daemons):
                subprocess.run(["scancel", "--full", "--user=root"], env=self.env)
                self.until(self.empty, "the queue to empty", 60)
        finally:
            for d in reversed(self.daemons):
                d.terminate()
                try:
                    d.wait(30)
                except subprocess.TimeoutExpired:
                    d.kill()
                    d.wait()
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> dict:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
