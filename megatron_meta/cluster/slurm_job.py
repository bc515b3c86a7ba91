"""The Slurm job a process runs in: its id, attempt, end time; requeueing it.

Slurm 22.05 exports no ``SLURM_JOB_END_TIME`` (newer releases do), so the end time falls back to
``squeue -h -j JOB -o %e``. Everything returns None outside a Slurm job.
"""

from __future__ import annotations

import datetime
import logging
import os
import subprocess
import time
from typing import List, Optional

logger = logging.getLogger(__name__)


def in_job() -> bool:
    return "SLURM_JOB_ID" in os.environ


def job_key() -> Optional[str]:
    """``JOBID``, or ``ARRAYJOBID_TASKID`` for an array task (the id ``scontrol`` takes)."""
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env:
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def restart_count() -> int:
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def _parse_time(text: str) -> Optional[float]:
    """squeue's ``%e`` (local time, ``2026-11-30T05:12:00``) as seconds since the epoch."""
    try:
        return datetime.datetime.strptime(text.strip(), "%Y-%m-%dT%H:%M:%S").timestamp()
    except ValueError:
        return None  # "N/A", "Unknown", or no time limit


def end_time() -> Optional[float]:
    """When Slurm will stop this job (seconds since the epoch), or None (no job, no limit)."""
    if not in_job():
        return None
    exported = os.environ.get("SLURM_JOB_END_TIME")
    if exported and exported.isdigit():
        return float(exported)
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", os.environ["SLURM_JOB_ID"], "-o", "%e"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        logger.warning("cannot ask squeue for the job's end time (%s)", e)
        return None
    return _parse_time(out.splitlines()[0]) if out.strip() else None


def time_limit_mins() -> Optional[float]:
    """This job's time limit in minutes (``squeue %l``), None outside a job or unlimited."""
    if not in_job():
        return None
    from megatron_meta.cluster.time_limit import job_limit_mins

    return job_limit_mins(os.environ["SLURM_JOB_ID"])


def default_exit_duration_mins(margin_mins: float) -> Optional[float]:
    """Minutes from now until the job's end minus ``margin_mins`` (None: no limit known)."""
    end = end_time()
    if end is None:
        return None
    return max(0.0, (end - time.time()) / 60.0 - margin_mins)


def requeue(key: Optional[str] = None) -> None:
    """``scontrol requeue`` this job (the array task itself for array tasks)."""
    key = key or job_key()
    if key is None:
        raise RuntimeError("not inside a Slurm job")
    subprocess.run(["scontrol", "requeue", key], check=True, timeout=60)


def _scontrol_fields(*args: str) -> dict:
    """``scontrol show ... -o`` as a dict of its ``Key=Value`` fields ({} when it fails)."""
    try:
        out = subprocess.run(
            ["scontrol", "show", *args, "-o"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return dict(f.split("=", 1) for f in out.split() if "=" in f)


def job_info(key: Optional[str] = None) -> dict:
    """What slurmctld says about this job now (JobState, Reason, Requeue, NodeList, ...)."""
    key = key or job_key()
    return _scontrol_fields("job", key) if key else {}


def node_names() -> List[str]:
    """This job's nodes in order (node index N is ``SLURM_NODEID`` N)."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST")
    if not nodelist:
        return []
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return out.split()


def unresponsive_nodes(names: List[str]) -> List[str]:
    """Those of ``names`` slurmctld finds down or not responding (a node failure)."""
    bad = []
    for name in names:
        state = _scontrol_fields("node", name).get("State", "")
        if any(word in state for word in ("DOWN", "NOT_RESPONDING", "FAIL")) or state.endswith("*"):
            bad.append(f"{name} ({state})")
    return bad
