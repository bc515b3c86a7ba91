"""After an attempt of a Slurm job: done, requeue, or fail (run by ``slurm/launch.sh``).

    python -m megatron_meta.cluster.requeue --exit-code RC --run-dir SAVE --max-restarts N

The decision reads the run's ``run_state.json`` (:mod:`.run_state`), not the exit code alone:
torchrun exits non-zero after forwarding a signal even when every rank saved cleanly.

* finished (or stopped at ``--exit-interval``, as asked): exit 0, dependants may start;
* stopped by a signal or the time limit in *this* attempt: ``scontrol requeue`` the job (the
  array task for arrays) while ``SLURM_RESTART_COUNT`` < ``--max-restarts``, else fail;
* anything else (a crash leaves ``running``): fail without requeueing, so a broken run never
  loops and ``--dependency=afterok`` dependants never start.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import List, Optional, Tuple

from megatron_meta.cluster import run_state, slurm_job

EXIT_MAX_RESTARTS = 3


def decide(exit_code: int, run_dir: Optional[str], max_restarts: int) -> Tuple[str, int, str]:
    """(action, exit code, message); action is ``done``, ``requeue`` or ``fail``."""
    state = run_state.read_state(run_dir) if run_dir else None
    if state is None:  # a stage without a run state (convert, evaluate): its exit code decides
        if exit_code == 0:
            return "done", 0, "command succeeded"
        return "fail", exit_code, f"command failed with exit code {exit_code}"
    this_attempt = state.job == slurm_job.job_key() and state.attempt == slurm_job.restart_count()
    if state.state == run_state.FINISHED:
        return "done", 0, f"run finished at iteration {state.iteration}"
    if state.state == run_state.STOPPED and this_attempt and not state.resumable:
        return "done", 0, f"run stopped as asked ({state.reason}) at iteration {state.iteration}"
    if state.state == run_state.STOPPED and this_attempt:
        attempt = slurm_job.restart_count()
        if attempt >= max_restarts:
            return (
                "fail",
                EXIT_MAX_RESTARTS,
                (
                    f"run stopped ({state.reason}) at iteration {state.iteration} after {attempt} "
                    f"restarts; --max-restarts {max_restarts} reached: submit it again to continue"
                ),
            )
        return (
            "requeue",
            0,
            (
                f"run stopped ({state.reason}) at iteration {state.iteration}: requeueing "
                f"(restart {attempt + 1} of at most {max_restarts})"
            ),
        )
    return (
        "fail",
        exit_code or 1,
        (
            f"run crashed (state {state.state!r} at iteration {state.iteration}, exit code "
            f"{exit_code}): not requeued; fix the cause and submit again (it resumes from the last "
            "checkpoint)"
        ),
    )


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m megatron_meta.cluster.requeue")
    parser.add_argument("--exit-code", type=int, required=True, help="exit code of the attempt")
    parser.add_argument("--run-dir", help="the run's output folder (--save), if it has one")
    parser.add_argument("--max-restarts", type=int, default=10, help="requeues per job at most")
    args = parser.parse_args(argv)
    action, code, message = decide(args.exit_code, args.run_dir, args.max_restarts)
    print(f"megatron-meta launcher: {message}", flush=True)
    if action == "requeue":
        try:
            slurm_job.requeue()
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            print(f"megatron-meta launcher: requeue failed ({e}); submit the job again to resume")
            return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
