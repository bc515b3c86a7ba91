"""A Slurm time limit, and what a training attempt can do within it.

Slurm's ``--time`` forms (``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``) become
minutes; from the limit come the warning signal's lead (``--signal=USR1@LEAD``, which the study
passes) and the margin the trainer keeps before the job's end for its last save. A limit that
leaves no time to train after start-up and that margin is refused, naming ``--time``: otherwise
every attempt would stop before its first iteration and requeue until ``--max-restarts`` ran
out.

    python -m megatron_meta.cluster.time_limit --check-job     # inside a job (slurm/launch.sh)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import List, Optional

from megatron_meta.errors import ConfigError

# Start-up of an attempt before its first iteration (imports, rendezvous, model, checkpoint
# load): measured 20-60 s for tiny models on two shared cores; larger models take longer.
STARTUP_MINS = 1.0
# Training an attempt must be left at least, or requeueing costs more than it gains.
MIN_WORK_MINS = 1.0


def parse_minutes(text: str) -> Optional[float]:
    """Slurm's time format as minutes; None for ``UNLIMITED``/``INFINITE``/``NOT_SET``."""
    text = str(text).strip()
    if text.upper() in ("UNLIMITED", "INFINITE", "NOT_SET", "N/A", ""):
        return None
    try:
        days, _, rest = text.rpartition("-")
        d = int(days) if days else 0
        parts = [int(p) for p in rest.split(":")]
    except ValueError:
        raise ConfigError(f"--time {text}: not a Slurm time (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S)")
    if days:  # D-H, D-H:M, D-H:M:S
        h, m, s = (parts + [0, 0])[:3]
    elif len(parts) == 1:
        h, m, s = 0, parts[0], 0
    elif len(parts) == 2:
        h, m, s = 0, parts[0], parts[1]
    elif len(parts) == 3:
        h, m, s = parts
    else:
        raise ConfigError(f"--time {text}: not a Slurm time (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S)")
    return d * 1440 + h * 60 + m + s / 60.0


def signal_lead_seconds(limit_mins: Optional[float]) -> int:
    """Seconds before the end for ``--signal=USR1@N``: a tenth of the limit, 30 to 180."""
    if limit_mins is None:
        return 180
    return int(min(180, max(30, limit_mins * 6)))


def exit_margin_mins(limit_mins: float, configured_mins: float) -> float:
    """The margin before the job's end: ``--exit-duration-margin-mins``, but at most a fifth of
    the limit (a short job must not spend most of its time waiting), and at least half a
    minute for the last save."""
    return max(0.5, min(configured_mins, limit_mins / 5.0))


def check_limit(limit_mins: Optional[float], configured_margin_mins: float = 5.0) -> None:
    """Refuse a limit under which an attempt cannot train (ConfigError naming ``--time``)."""
    if limit_mins is None:
        return
    margin = exit_margin_mins(limit_mins, configured_margin_mins)
    need = STARTUP_MINS + MIN_WORK_MINS + margin
    if limit_mins < need:
        raise ConfigError(
            f"--time {limit_mins:g} min is too short for a training job: start-up "
            f"(~{STARTUP_MINS:g} min), at least {MIN_WORK_MINS:g} min of training and the "
            f"{margin:g} min margin kept for the last save (--exit-duration-margin-mins) need "
            f"--time {int(need + 0.999)} or more"
        )


def job_limit_mins(job: str) -> Optional[float]:
    """The time limit of a running job (``squeue %l``), None when unlimited or unknown."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%l"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    try:
        return parse_minutes(out.splitlines()[0]) if out else None
    except ConfigError:
        return None


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m megatron_meta.cluster.time_limit")
    p.add_argument("--check-job", action="store_true", help="check this job's own time limit")
    p.add_argument("--margin-mins", type=float, default=5.0, help="--exit-duration-margin-mins")
    a = p.parse_args(argv)
    if a.check_job and os.environ.get("SLURM_JOB_ID"):
        try:
            check_limit(job_limit_mins(os.environ["SLURM_JOB_ID"]), a.margin_mins)
        except ConfigError as e:
            print(f"megatron-meta launcher: {e}; not started, not requeued", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
