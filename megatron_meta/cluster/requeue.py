"""After an attempt of a Slurm job: done, requeue, or fail (run by ``slurm/launch.sh``).

    python -m megatron_meta.cluster.requeue --exit-code RC --run-dir SAVE --log-dir LOGS \
        --max-restarts N [--max-failures M]

The decision reads the run's ``run_state.json`` (:mod:`.run_state`) and what Slurm says about
the job and its nodes, not the exit code alone (torchrun exits non-zero after forwarding a signal
even when every rank saved cleanly):

* finished (or stopped at ``--exit-interval``, as asked): exit 0, dependants may start;
* cancelled by the user (``scancel``: JobState CANCELLED): never requeued, state ``cancelled``;
* a node failure (a node of the job down or not responding): Slurm itself requeues a
  ``--requeue`` job once it gives the node up (or fails it); the launcher says so and does not;
* stopped by a signal (preemption) or the time limit in *this* attempt: ``scontrol requeue`` the
  job (the array task for arrays) while ``SLURM_RESTART_COUNT`` < ``--max-restarts``;
* anything else is a crash: state ``crashed`` naming the rank, node and signal (from the node
  logs, :mod:`.crash`) and the last checkpoint; failed without requeueing, so a broken run never
  loops and ``--dependency=afterok`` dependants never start. ``--max-failures M`` (opt-in) retries
  a crashed job up to M times from its last checkpoint. The retry cannot be kept off the failed
  node from in here: Slurm changes ``ExcNodeList`` only of a pending job, and a requeued job is
  not pending until this script has ended; the failed node is recorded in the history, and
  ``study submit`` excludes it when it resubmits the run.

Every attempt's ending is appended to the state's ``history``.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

from megatron_meta.cluster import crash, run_state, slurm_job

EXIT_MAX_RESTARTS = 3
# JobStates in which Slurm has already requeued the job itself (nothing for us to do).
REQUEUED_BY_SLURM = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING")


def ended_by_slurm(job: dict) -> Optional[str]:
    """Why Slurm is ending the job while its batch script still runs: ``cancelled``,
    ``time-limit``, ``node-failure`` or None (still running: a preemption signal, or our stop).

    ``scancel`` makes the state CANCELLED|COMPLETING, which ``scontrol`` shows as COMPLETING;
    the time limit and a node failure show COMPLETING too, with Reason TimeLimit / NodeDown.
    """
    state, reason = job.get("JobState", ""), job.get("Reason", "")
    if state == "CANCELLED":
        return "cancelled"
    if state in ("TIMEOUT", "DEADLINE") or reason == "TimeLimit":
        return "time-limit"
    if state == "NODE_FAIL" or reason == "NodeDown":
        return "node-failure"
    if state == "COMPLETING" and "Preempt" not in reason:
        return "cancelled"
    return None


@dataclass
class Decision:
    action: str
    """done, requeue or fail."""
    code: int
    """The launcher's exit code (Slurm's job state)."""
    message: str
    ended: str
    """How the attempt ended: finished, stopped, cancelled, node-failure, crashed, failed."""
    detail: Optional[str] = None


def _checkpoint(state: run_state.RunState) -> str:
    return f"iteration {state.iteration}" if state.iteration else "none yet (iteration 0)"


def decide(
    exit_code: int,
    run_dir: Optional[str],
    max_restarts: int,
    max_failures: int = 0,
    job: Optional[dict] = None,
    unresponsive: Tuple[str, ...] = (),
    cause: Optional[crash.RankFailure] = None,
    training: bool = False,
) -> Decision:
    """The decision from the facts; ``job`` is ``scontrol show job``'s fields; ``training``:
    the command was a training run (its ranks write the run state)."""
    job = job or {}
    job_state = job.get("JobState", "")
    ending = ended_by_slurm(job)
    state = run_state.read_state(run_dir) if run_dir else None
    if state is None and training and run_dir and exit_code:  # died before writing it
        state = run_state.RunState(run_state.RUNNING, 0)
    if state is None:  # a stage without a run state (convert, evaluate): its exit code decides
        if ending == "cancelled":
            return Decision("fail", exit_code or 1, "cancelled by the user (scancel)", "cancelled")
        if exit_code == 0:
            return Decision("done", 0, "command succeeded", "finished")
        return Decision("fail", exit_code, f"command failed with exit code {exit_code}", "failed")
    this_attempt = state.job == slurm_job.job_key() and state.attempt == slurm_job.restart_count()
    attempt = slurm_job.restart_count()
    if state.state == run_state.FINISHED:
        return Decision("done", 0, f"run finished at iteration {state.iteration}", "finished")
    restarts = job.get("Restarts", "")
    if restarts.isdigit() and int(restarts) > attempt:  # a node failure (or an admin) did it
        nodes = ", ".join(unresponsive) or "a node of the job failed"
        return Decision(
            "fail",
            exit_code or 1,
            f"Slurm requeued the job itself ({nodes}; {job_state} {job.get('Reason', '')}); "
            f"it resumes from its last checkpoint ({_checkpoint(state)}) when it starts again",
            "requeued-by-slurm",
        )
    if ending == "cancelled":
        return Decision(
            "fail",
            exit_code or 1,
            f"run cancelled by the user (scancel); last checkpoint: {_checkpoint(state)}; not "
            "requeued: submit it again to continue from there",
            "cancelled",
            detail="cancelled by the user (scancel)",
        )
    if unresponsive or ending == "node-failure":
        nodes = ", ".join(unresponsive) or job.get("NodeList", "?")
        if job.get("Requeue") == "1":
            then = (
                "Slurm requeues the job itself once it marks the node DOWN (the job has "
                f"--requeue), and it resumes from its last checkpoint ({_checkpoint(state)})"
            )
        else:
            then = "Slurm fails the job (it has no --requeue); submit it again to resume"
        return Decision(
            "fail", exit_code or 1, f"node failure: {nodes} not responding; {then}", "node-failure"
        )
    if job_state in REQUEUED_BY_SLURM:
        return Decision(
            "fail",
            exit_code or 1,
            f"Slurm already requeued the job ({job_state}, {job.get('Reason', '')}); it resumes "
            f"from its last checkpoint ({_checkpoint(state)})",
            "requeued-by-slurm",
        )
    if state.state == run_state.STOPPED and this_attempt and not state.resumable:
        return Decision(
            "done", 0, f"run stopped as asked ({state.reason}) at iteration {state.iteration}",
            "stopped",
        )
    if state.state == run_state.STOPPED and this_attempt:
        why = "time limit" if state.reason == "exit-duration" or ending == "time-limit" else (
            f"preempted: {state.reason}"
        )
        if attempt >= max_restarts:
            return Decision(
                "fail",
                EXIT_MAX_RESTARTS,
                f"run stopped ({why}) at iteration {state.iteration} after {attempt} restarts; "
                f"--max-restarts {max_restarts} reached: submit it again to continue",
                "stopped",
            )
        return Decision(
            "requeue",
            0,
            f"run stopped ({why}) at iteration {state.iteration}: requeueing (restart "
            f"{attempt + 1} of at most {max_restarts})",
            "stopped",
        )
    what = cause.describe() if cause else f"no rank failure in the node logs, exit code {exit_code}"
    failures = 1 + sum(
        1 for h in state.history if h.get("ended") == "crashed" and h.get("job") == slurm_job.job_key()
    )
    head = f"run crashed: {what}; last checkpoint: {_checkpoint(state)}"
    if failures <= max_failures and attempt < max_restarts:
        return Decision(
            "requeue",
            0,
            f"{head}; retrying from it (failure {failures} of --max-failures {max_failures})",
            "crashed",
            detail=what,
        )
    limit = f"--max-failures {max_failures} reached" if max_failures else "--max-failures 0"
    return Decision(
        "fail",
        exit_code or 1,
        f"{head}; not requeued ({limit}): fix the cause and submit again (it resumes from the "
        "last checkpoint)",
        "crashed",
        detail=what,
    )


def record(
    run_dir: Optional[str], d: Decision, exit_code: int, node: Optional[str], training: bool = False
) -> None:
    """Append the attempt's ending to the run state's history; crashed/cancelled become the
    state itself (the trainer could not write them; a run that died before writing any state
    gets one)."""
    state = run_state.read_state(run_dir) if run_dir else None
    if state is None and training and run_dir and d.ended in (run_state.CRASHED, run_state.CANCELLED):
        state = run_state.RunState(d.ended, 0)
    if state is None:
        return
    state.history.append(
        {
            "job": slurm_job.job_key(),
            "attempt": slurm_job.restart_count(),
            "ended": d.ended,
            "reason": state.reason if d.ended == "stopped" else d.detail,
            "iteration": state.iteration,
            "node": node,
            "exit_code": exit_code,
            "action": d.action,
            "time": time.time(),
        }
    )
    if d.ended in (run_state.CRASHED, run_state.CANCELLED):
        state.state, state.detail = d.ended, d.detail
        state.job, state.attempt, state.time = slurm_job.job_key(), slurm_job.restart_count(), time.time()
    run_state.write_state(run_dir, state)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m megatron_meta.cluster.requeue")
    parser.add_argument("--exit-code", type=int, required=True, help="exit code of the attempt")
    parser.add_argument("--run-dir", help="the run's output folder (--save), if it has one")
    parser.add_argument("--log-dir", help="the attempt's logs (node{N}.log)")
    parser.add_argument("--max-restarts", type=int, default=10, help="requeues per job at most")
    parser.add_argument(
        "--max-failures", type=int, default=0, help="retries of a crashed job (default 0: none)"
    )
    parser.add_argument("--training", action="store_true", help="the attempt ran torchrun")
    args = parser.parse_args(argv)
    # Slurm's SIGTERM to the job (a cancel, a requeue) must not cut the decision short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    job = slurm_job.job_info()
    names = slurm_job.node_names()
    cause = crash.root_cause(args.log_dir, names)
    d = decide(
        args.exit_code,
        args.run_dir,
        args.max_restarts,
        args.max_failures,
        job,
        tuple(slurm_job.unresponsive_nodes(names)),
        cause,
        args.training,
    )
    record(args.run_dir, d, args.exit_code, cause.node if cause else None, args.training)
    print(f"megatron-meta launcher: {d.message}", flush=True)
    if d.action != "requeue":
        return d.code
    try:
        slurm_job.requeue()
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        print(f"megatron-meta launcher: requeue failed ({e}); submit the job again to resume")
        return 1
    return d.code


if __name__ == "__main__":
    sys.exit(main())
