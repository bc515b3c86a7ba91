"""A real two-node Slurm cluster on this machine for the tests (FACTS section 3).

munge (reused when one runs already), slurmctld and two ``slurmd -N`` nodes with a private
``slurm.conf`` (``SLURM_CONF``), so /etc/slurm is never touched. Every daemon started here is
stopped by its pid at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import List, Optional

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")


def why_not() -> Optional[str]:
    """Why this machine cannot run the cluster, or None."""
    missing = [
        d for d in DAEMONS if shutil.which(d) is None and not os.path.exists(f"/usr/sbin/{d}")
    ]
    if missing:
        return (
            f"Slurm/munge not installed ({', '.join(missing)} missing): apt-get install slurmctld "
            "slurmd slurm-client munge (.ci/run does)"
        )
    if os.geteuid() != 0:
        return "the test cluster runs slurmd as root (slurmd must switch users); run as root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid(path: str, timeout: float = 30) -> int:
    end = time.time() + timeout
    while time.time() < end:
        try:
            return int(open(path).read().strip())
        except (OSError, ValueError):
            time.sleep(0.2)
    raise RuntimeError(f"daemon did not write {path}")


class Cluster:
    def __init__(self, folder: str):
        self.folder = folder
        self.conf = os.path.join(folder, "slurm.conf")
        self.pids: List[int] = []
        self.env = dict(os.environ, SLURM_CONF=self.conf)

    def _munge(self) -> None:
        sock = "/run/munge/munge.socket.2"
        if (
            os.path.exists(sock)
            and subprocess.run(["munge", "-n"], capture_output=True).returncode == 0
        ):
            return  # a working munged: share it
        os.makedirs("/run/munge", exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        if not os.path.exists("/etc/munge/munge.key"):
            subprocess.run(["mungekey", "--create"], check=True)
            shutil.chown("/etc/munge/munge.key", "munge", "munge")
            os.chmod("/etc/munge/munge.key", 0o400)
        own = tempfile.mkdtemp(prefix="mm-test-munge-")  # pytest's folders are closed to munge
        os.chmod(own, 0o755)
        shutil.chown(own, "munge", "munge")
        pidfile = os.path.join(own, "munged.pid")
        subprocess.run(
            [
                "runuser",
                "-u",
                "munge",
                "--",
                "munged",
                "--pid-file",
                pidfile,
                "--log-file",
                os.path.join(own, "munged.log"),
            ],
            check=True,
        )
        self.pids.append(_pid(pidfile))

    def start(self) -> "Cluster":
        os.makedirs(os.path.join(self.folder, "state"), exist_ok=True)
        host = socket.gethostname().split(".")[0]
        d = self.folder
        nodes = []
        for n in ("n1", "n2"):
            os.makedirs(os.path.join(d, "spool", n), exist_ok=True)
            nodes.append(
                f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={_free_port()} "
                "CPUs=1 RealMemory=4000 State=UNKNOWN"
            )
        conf = f"""ClusterName=mmtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd-%n.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
MinJobAge=3600
KillWait=20
SlurmdTimeout=30
SchedulerParameters=defer_batch_submit
SchedulerType=sched/backfill
{chr(10).join(nodes)}
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
"""
        with open(self.conf, "w") as f:
            f.write(conf)
        self._munge()
        subprocess.run(["slurmctld", "-f", self.conf, "-c"], check=True, env=self.env)
        self.pids.append(_pid(os.path.join(d, "slurmctld.pid")))
        for n in ("n1", "n2"):
            subprocess.run(["slurmd", "-f", self.conf, "-N", n], check=True, env=self.env)
            self.pids.append(_pid(os.path.join(d, f"slurmd-{n}.pid")))
        end = time.time() + 60
        while time.time() < end:
            out = self.run("sinfo", "-h", "-o", "%D %t").stdout.split()
            if out[:2] == ["2", "idle"]:
                return self
            time.sleep(0.5)
        raise RuntimeError(
            f"nodes not idle: {self.run('sinfo').stdout}\n"
            + open(f"{d}/slurmctld.log").read()[-3000:]
        )

    def kill_slurmd(self, node: str) -> None:
        """A node failure: SIGKILL that node's slurmd (its job steps live on, as on a real
        machine whose daemon died, until Slurm gives the node up)."""
        pid = _pid(os.path.join(self.folder, f"slurmd-{node}.pid"))
        _signal(pid, signal.SIGKILL)
        end = time.time() + 15
        while time.time() < end and _alive(pid):
            time.sleep(0.2)

    def start_slurmd(self, node: str) -> None:
        """Bring the node back (ReturnToService=2 lets it rejoin when it registers)."""
        pidfile = os.path.join(self.folder, f"slurmd-{node}.pid")
        if os.path.exists(pidfile):
            os.remove(pidfile)
        subprocess.run(["slurmd", "-f", self.conf, "-N", node], check=True, env=self.env)
        self.pids.append(_pid(pidfile))

    def node_state(self, node: str) -> str:
        out = self.run("scontrol", "show", "node", node, "-o").stdout
        fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
        return fields.get("State", "")

    def run(self, *cmd: str, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), capture_output=True, text=True, env=self.env, check=check)

    def job_field(self, job: str, name: str) -> Optional[str]:
        out = self.run("scontrol", "show", "job", "-o", job).stdout
        fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
        return fields.get(name)

    def wait(
        self, job: str, states=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout=300
    ) -> str:
        end = time.time() + timeout
        while time.time() < end:
            state = self.job_field(job, "JobState")
            if state in states:
                return state
            time.sleep(1)
        raise AssertionError(f"job {job} still {self.job_field(job, 'JobState')} after {timeout} s")

    def stop(self) -> None:
        """Cancel every job and wait for them to end (their step daemons with them), then stop
        the daemons started here by pid: SIGTERM, and SIGKILL for any still alive 15 s later."""
        self.run("scancel", "--partition", "debug")
        end = time.time() + 60
        while time.time() < end and self.run("squeue", "-h").stdout.strip():
            time.sleep(0.5)
        for pid in reversed(self.pids):
            _signal(pid, signal.SIGTERM)
        end = time.time() + 15
        while time.time() < end and any(_alive(pid) for pid in self.pids):
            time.sleep(0.2)
        for pid in self.pids:
            _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
