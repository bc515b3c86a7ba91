"""``run_state.json`` in a run's output folder: whether the run finished, stopped or is running.

The trainer (rank 0) writes ``running`` when it starts and after each checkpoint, ``stopped``
when it saved and stopped early (a signal, the time limit, ``--exit-interval``) and ``finished``
when it reached ``--train-iters``. A crash leaves ``running`` behind, which is how the launcher
tells a crash from a stop; the launcher then writes ``crashed`` (which rank on which node died
and how) or ``cancelled`` (a user's ``scancel``). Each state records the Slurm job and attempt
that wrote it, so a stale file of an earlier attempt is never taken for this one's, and
``history`` keeps every attempt's ending (kept across writes).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from megatron_meta.cluster import slurm_job

FILENAME = "run_state.json"
RUNNING, STOPPED, FINISHED = "running", "stopped", "finished"
# Written by the launcher (slurm/launch.sh -> requeue.py) after an attempt, never by the trainer.
CRASHED, CANCELLED = "crashed", "cancelled"
# Reasons a stopped run should continue in a new attempt (the others were asked for).
RESUMABLE_REASONS = ("SIGTERM", "SIGUSR1", "exit-duration")


@dataclass
class RunState:
    """One line of history: what the run was doing when this was written."""

    state: str
    """running, stopped or finished."""
    iteration: int
    """Iteration of the newest checkpoint (running: the iteration it started from)."""
    reason: Optional[str] = None
    """Why a stopped run stopped: a signal name, exit-duration or exit-interval."""
    job: Optional[str] = field(default_factory=slurm_job.job_key)
    """Slurm job (``ARRAY_TASK`` for array tasks) that wrote it; None outside Slurm."""
    attempt: int = field(default_factory=slurm_job.restart_count)
    """``SLURM_RESTART_COUNT`` of that job (0 on the first attempt)."""
    time: float = field(default_factory=time.time)
    """When it was written (seconds since the epoch)."""
    detail: Optional[str] = None
    """crashed / cancelled: what happened (rank, node, signal), in words."""
    history: List[Dict[str, Any]] = field(default_factory=list)
    """Every ended attempt: job, attempt, ended (state), reason, iteration, node, action."""

    @property
    def resumable(self) -> bool:
        return self.state == STOPPED and self.reason in RESUMABLE_REASONS


def path_in(folder: str) -> str:
    return os.path.join(folder, FILENAME)


def write_state(folder: str, state: RunState) -> None:
    """Write atomically (temporary name, then rename); an empty ``history`` keeps the file's."""
    os.makedirs(folder, exist_ok=True)
    if not state.history:
        old = read_state(folder)
        state.history = old.history if old else []
    tmp = path_in(folder) + f".tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(asdict(state), f, indent=2)
    os.replace(tmp, path_in(folder))


def read_state(folder: str) -> Optional[RunState]:
    """The run's state, or None when it never started (or the file is unreadable)."""
    try:
        with open(path_in(folder), encoding="utf-8") as f:
            raw = json.load(f)
        return RunState(**raw)
    except (OSError, ValueError, TypeError):
        return None


def is_finished(folder: str) -> bool:
    state = read_state(folder)
    return state is not None and state.state == FINISHED
