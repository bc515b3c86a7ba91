"""Preemption and time limits without Slurm: the run state a run leaves, the launcher's
decision after an attempt, the time-limit stop, and automatic resumption from --save."""

import json
import os
import subprocess
import sys

import pytest

from megatron_meta.cluster import requeue, run_state, slurm_job
from training_support import losses_by_iteration, run_cli, tiny_args, write_corpus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def job(monkeypatch):
    """A process environment like an array task's, attempt 1."""
    for name in ("SLURM_JOB_END_TIME",):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")


def test_job_key_is_the_array_task_and_the_attempt_is_the_restart_count(job):
    assert slurm_job.job_key() == "40_1" and slurm_job.restart_count() == 1
    assert run_state.RunState("running", 0).job == "40_1"


def test_end_time_from_slurm_job_end_time(job, monkeypatch):
    import time

    monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(time.time()) + 3600))
    minutes = slurm_job.default_exit_duration_mins(margin_mins=5)
    assert 54 < minutes <= 55
    assert slurm_job._parse_time("2026-11-30T05:12:00") is not None
    assert slurm_job._parse_time("N/A") is None


@pytest.mark.parametrize(
    "state,reason,same_attempt,code,expected",
    [
        ("finished", None, True, 1, ("done", 0)),
        ("stopped", "SIGUSR1", True, 1, ("requeue", 0)),
        ("stopped", "exit-duration", True, 0, ("requeue", 0)),
        ("stopped", "exit-interval", True, 0, ("done", 0)),
        ("stopped", "SIGUSR1", False, 1, ("fail", 1)),  # stale: an earlier attempt's stop
        ("running", None, True, 1, ("fail", 1)),  # a crash
        ("running", None, True, 0, ("fail", 1)),  # exited 0 without saying so: not done
    ],
)
def test_decision_after_an_attempt(job, tmp_path, state, reason, same_attempt, code, expected):
    written = run_state.RunState(state, 5, reason, attempt=1 if same_attempt else 0)
    run_state.write_state(str(tmp_path), written)
    d = requeue.decide(code, str(tmp_path), max_restarts=3)
    assert (d.action, d.code) == expected, d.message


def test_requeues_stop_at_max_restarts_and_stages_without_state_use_the_exit_code(
    job, tmp_path, monkeypatch
):
    run_state.write_state(str(tmp_path), run_state.RunState("stopped", 5, "SIGTERM"))
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    d = requeue.decide(1, str(tmp_path), max_restarts=1)
    assert (d.action, d.code) == ("fail", requeue.EXIT_MAX_RESTARTS)
    assert "--max-restarts 1" in d.message
    d = requeue.decide(0, str(tmp_path / "none"), 3)
    assert (d.action, d.code) == ("done", 0)
    d = requeue.decide(2, None, 3)
    assert (d.action, d.code) == ("fail", 2)


@pytest.mark.distributed
def test_time_limit_stop_then_the_same_command_resumes_without_loss(tmp_path):
    manifest = write_corpus(str(tmp_path / "corpus"))
    whole, part = str(tmp_path / "whole"), str(tmp_path / "part")
    assert run_cli(tiny_args(manifest, **{"--save": whole})).returncode == 0
    assert run_state.read_state(whole).state == "finished"
    # A time limit reached after the first iteration: save, stop, say so.
    first = run_cli(tiny_args(manifest, **{"--save": part, "--exit-duration-in-mins": 1e-5}))
    assert first.returncode == 0, first.stderr[-3000:]
    state = run_state.read_state(part)
    assert (state.state, state.reason, state.iteration) == ("stopped", "exit-duration", 1)
    # The same command, no --load: it resumes from --save and finishes.
    second = run_cli(tiny_args(manifest, **{"--save": part}))
    assert "resuming from the newest checkpoint in --save" in second.stderr
    assert run_state.read_state(part).state == "finished"
    assert losses_by_iteration(part) == losses_by_iteration(whole)  # none lost, none repeated


def test_array_tasks_map_to_regions_and_variants():
    from megatron_meta.cluster.array_task import task_args

    regions = ["Africa", "America", "Asia", "Europe"]
    assert task_args("local", regions, 2, "runs/l") == [
        "--exclude-regions",
        "Africa,America,Europe",
        "--save",
        "runs/l/local-asia",
    ]
    assert task_args("leave-out", regions, 0, "runs/o/") == [
        "--exclude-regions",
        "Africa",
        "--save",
        "runs/o/leave-out-africa",
    ]
    assert task_args("variant", ["url_only"], 0, "r") == [
        "--variant",
        "url_only",
        "--save",
        "r/variant-url_only",
    ]
    with pytest.raises(SystemExit, match="--array=0-3"):
        task_args("local", regions, 4, "r")


def test_launcher_scripts_parse_and_refuse_to_run_outside_a_job(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    for script in sorted(os.listdir(os.path.join(REPO, "slurm"))):
        if script.endswith((".sh", ".sbatch")):
            assert (
                subprocess.run(["bash", "-n", os.path.join(REPO, "slurm", script)]).returncode == 0
            )
    out = subprocess.run(
        ["bash", "slurm/launch.sh", "--", "train"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and "runs inside a Slurm job" in out.stderr
