"""When training stops early: a stop signal (Slurm preemption, ``scancel --signal``) or the clock
(``--exit-duration-in-mins``, or inside a Slurm job its end minus a margin).

:class:`StopRequest` is installed before anything slow happens (the ``train`` command creates it
first), so a signal that arrives during start-up is remembered instead of killing the process.
:class:`StopClock` keeps the margin before the job's end at least what one iteration and the last
save take, measured as the run goes, so that every attempt saves before Slurm kills it.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any, Dict, Optional

from megatron_meta.cluster import slurm_job, time_limit

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # Slurm preemption / time limit warnings


class StopRequest:
    """Remembers SIGTERM/SIGUSR1; all ranks agree on it at the end of each iteration."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._previous: Dict[int, Any] = {}
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
            # Restart interrupted system calls: a signal landing in a gloo socket read must not
            # fail the collective (EINTR) and crash the rank that was asked to save.
            signal.siginterrupt(sig, False)

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        logger.warning(
            "received %s: saving a checkpoint after this iteration", signal.Signals(signum).name
        )

    def agreed(self, device, time_up: bool = False) -> Optional[str]:
        """The stop reason all ranks agree on: a signal's name, ``exit-duration`` or None."""
        import torch
        import torch.distributed as dist

        flag = torch.tensor(
            [0 if self.signum is None else int(self.signum), int(time_up)], device=device
        )
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if int(flag[0].item()):
            return signal.Signals(int(flag[0].item())).name
        return "exit-duration" if int(flag[1].item()) else None

    def close(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class StopClock:
    """The ``time.monotonic()`` at which to save and stop (None: no limit).

    ``--exit-duration-in-mins`` is taken as given. Inside a Slurm job with a time limit the
    stop time is the job's end minus a margin derived from the limit
    (:func:`~megatron_meta.cluster.time_limit.exit_margin_mins`), widened whenever the measured
    iteration plus save time would not fit in it.
    """

    def __init__(self, exit_duration_in_mins: Optional[float], margin_mins: float):
        self.job_end: Optional[float] = None
        self.margin_s = 0.0
        self.deadline: Optional[float] = None
        now = time.monotonic()
        if exit_duration_in_mins is not None:
            self.deadline = now + 60.0 * exit_duration_in_mins
            return
        end = slurm_job.end_time()
        if end is None:
            return
        remaining_s = end - time.time()
        limit = slurm_job.time_limit_mins()
        margin = time_limit.exit_margin_mins(limit, margin_mins) if limit else margin_mins
        self.job_end, self.margin_s = now + remaining_s, 60.0 * margin
        self.deadline = self.job_end - self.margin_s
        logger.info(
            "Slurm job ends in %.1f min: saving and stopping after %.1f min "
            "(--exit-duration-in-mins; margin %.1f min%s)",
            remaining_s / 60, max(0.0, remaining_s - self.margin_s) / 60, margin,
            f" of a {limit:g} min limit" if limit else "",
        )

    def measured(self, iteration_s: float, save_s: float) -> None:
        """After a save: keep room for one more iteration and a save (twice the time, for
        noise) before the job's end."""
        if self.job_end is None:
            return
        need = 2.0 * (iteration_s + save_s) + 10.0
        if need > self.margin_s:
            self.margin_s = need
            self.deadline = self.job_end - need
            logger.info(
                "an iteration and a save take %.0f s: stopping %.1f min before the job's end",
                iteration_s + save_s, need / 60,
            )

    def time_up(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline
