"""On a real two-node Slurm cluster: the launcher, preemption and requeue, a crash, arrays and a
study graph (``megatron-meta study submit/status/report``). CPU, the ``tiny`` model, gloo."""

import json
import math
import os
import subprocess
import sys
import time

import psutil
import pytest

from training_support import REPO, losses_by_iteration, run_cli, tiny_args, write_corpus

pytestmark = [pytest.mark.slurm, pytest.mark.distributed, pytest.mark.slow]

ITERS = 12
VENV = sys.prefix  # passed to the jobs explicitly (launch.sh --env), as a user's job would


def job_env(cluster):
    """sbatch's environment without this Python on PATH: the job activates it itself."""
    env = {k: v for k, v in cluster.env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(
        p for p in env["PATH"].split(os.pathsep) if not p.startswith(VENV)
    )
    return {**env, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def sbatch(cluster, *args):
    out = subprocess.run(
        ["sbatch", "--parsable", *args],
        cwd=REPO,
        env=job_env(cluster),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def pretrain(cluster, manifest, save, *sbatch_flags, **flags):
    args = tiny_args(manifest, **{"--save": save, "--train-iters": ITERS, **flags})
    return sbatch(
        cluster,
        "--nodes",
        "2",
        "--time",
        "20",
        "--output",
        f"{save}.out",
        *sbatch_flags,
        "slurm/pretrain.sbatch",
        "--env",
        VENV,
        "--",
        *args,
    )


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("corpus")))


@pytest.fixture(scope="module")
def local_two_ranks(manifest, tmp_path_factory):
    save = str(tmp_path_factory.mktemp("local") / "run")
    result = run_cli(tiny_args(manifest, **{"--save": save, "--train-iters": ITERS}), nproc=2)
    assert result.returncode == 0, result.stderr[-3000:]
    return losses_by_iteration(save)


def assert_same_losses(save, reference):
    losses = losses_by_iteration(save)
    assert sorted(losses) == list(range(1, ITERS + 1))  # none lost, none repeated
    for it, loss in reference.items():
        assert math.isclose(losses[it], loss, rel_tol=2e-5), (it, losses[it], loss)


def test_two_node_pretrain_equals_a_local_two_rank_run(
    slurm_cluster, manifest, local_two_ranks, tmp_path
):
    save = str(tmp_path / "two-node")
    job = pretrain(slurm_cluster, manifest, save)
    state = slurm_cluster.wait(job)
    out = open(f"{save}.out").read()
    assert state == "COMPLETED", out[-3000:]
    assert_same_losses(save, local_two_ranks)
    assert "rendezvous 127.0.0.1:" in out  # the node's address from scontrol, not its name
    logs = os.path.join(save, "logs", f"{job}_0")
    assert sorted(f for f in os.listdir(logs) if f.endswith(".log")) == ["node0.log", "node1.log"]
    # The time limit (--time 20) became the trainer's stop time, minus the margin.
    node0 = open(os.path.join(logs, "node0.log")).read()
    assert "Slurm job ends in" in node0 and "run finished at iteration 12" in out


def test_preemption_saves_requeues_and_resumes_without_losing_an_iteration(
    slurm_cluster, manifest, local_two_ranks, tmp_path
):
    save = str(tmp_path / "preempted")
    job = pretrain(slurm_cluster, manifest, save, "--dependency", "singleton")
    metrics = os.path.join(save, "metrics.jsonl")
    end = time.time() + 240
    while time.time() < end and not (
        os.path.exists(metrics) and len(open(metrics).readlines()) >= 3
    ):
        time.sleep(0.2)
    assert os.path.exists(metrics), open(f"{save}.out").read()[-3000:]
    slurm_cluster.run("scancel", "--signal=USR1", job, check=True)
    end = time.time() + 180
    while time.time() < end and slurm_cluster.job_field(job, "Restarts") in (None, "0"):
        time.sleep(1)
    assert slurm_cluster.job_field(job, "Restarts") == "1", open(f"{save}.out").read()[-3000:]
    # The requeued job passes through a cancelled/completing state before it is pending again;
    # only then can its start time be moved (Slurm holds requeued jobs back about 2 minutes).
    end = time.time() + 60
    while time.time() < end and slurm_cluster.job_field(job, "JobState") != "PENDING":
        time.sleep(0.5)
    slurm_cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now", check=True)
    assert slurm_cluster.wait(job) == "COMPLETED", open(f"{save}.out").read()[-3000:]
    out = open(f"{save}.out").read()
    assert "requeueing (restart 1" in out and "run finished at iteration 12" in out
    assert os.path.isdir(os.path.join(save, "logs", f"{job}_1"))  # the second attempt's logs
    assert_same_losses(save, local_two_ranks)


def _study(tmp_path, manifest):
    path = tmp_path / "study.yaml"
    path.write_text(f"""
name: loo
output_dir: {tmp_path / 'out'}
regions: [Africa, Asia, Europe]
data: {{manifest: {manifest}}}
defaults:
  train: {{model: tiny, seq-length: 32, micro-batch-size: 2, global-batch-size: 8,
          train-iters: 60, log-interval: 1, eval-iters: 1, num-workers: 0, seed: 7}}
  slurm: {{time: 20, env: {VENV}, max_restarts: 2}}
runs:
  - name: "loo-{{exclude}}"
    exclude: [Africa, Asia, Europe]
stages:
  report: {{}}
""")
    return str(path)


def study(cluster, *args):
    return subprocess.run(
        [sys.executable, "-m", "megatron_meta.cli", "study", *args],
        cwd=REPO,
        env=job_env(cluster),
        capture_output=True,
        text=True,
    )


def _processes():
    rows = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            env = p.environ()
        except (psutil.Error, OSError):
            continue
        if env.get("SLURM_JOB_ID"):
            rows.append(
                f"{p.pid} job {env.get('SLURM_JOB_ID')} rank {env.get('RANK')}: {' '.join(p.info['cmdline'] or [])[:80]}"
            )
    return "\n".join(rows)


def _rank0_of(job_id):
    """The rank-0 training process of a job (found by its Slurm job id, killed by pid)."""
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            env = p.environ()
        except (psutil.Error, OSError):
            continue
        if (
            env.get("SLURM_JOB_ID") == job_id
            and env.get("RANK") == "0"
            and "megatron_meta.cli" in " ".join(p.info["cmdline"] or [])
        ):
            return p
    return None


def test_study_array_crash_status_resubmit_and_report(slurm_cluster, manifest, tmp_path):
    spec = _study(tmp_path, manifest)
    out = str(tmp_path / "out")
    dry = study(slurm_cluster, "submit", spec, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert (
        dry.stdout.count("--array=0-2") == 1
        and "afterok:<train@0>_0:<train@0>_1:<train@0>_2" in dry.stdout
    )
    assert not os.path.exists(os.path.join(out, "study", "ledger.json"))

    first = study(slurm_cluster, "submit", spec)
    assert first.returncode == 0, first.stderr
    ledger = json.load(open(os.path.join(out, "study", "ledger.json")))
    array = ledger["train/loo-Africa"]["job"].split("_")[0]
    crashed = ledger["train/loo-Asia"]["job"]
    # Crash loo-Asia: kill its (only) rank as soon as it runs.
    end, victim = time.time() + 240, None
    while time.time() < end and victim is None:
        state = slurm_cluster.job_field(crashed, "JobState")
        assert state in ("PENDING", "RUNNING"), (state, slurm_cluster.job_field(crashed, "Reason"))
        if state == "RUNNING":
            victim = _rank0_of(slurm_cluster.job_field(crashed, "JobId"))
        time.sleep(0.2)
    assert victim is not None, "loo-Asia never started: " + _processes()
    victim.kill()
    assert slurm_cluster.wait(crashed) == "FAILED"
    assert slurm_cluster.job_field(crashed, "Restarts") == "0"  # a crash is not requeued
    for task in ("0", "2"):
        assert slurm_cluster.wait(f"{array}_{task}") == "COMPLETED"
    report_job = ledger["report"]["job"]
    assert slurm_cluster.wait(report_job) == "CANCELLED"  # its dependency can never be met
    status = study(slurm_cluster, "status", spec)
    rows = [line.split() for line in status.stdout.splitlines()[1:]]
    lines = {r[0]: r[1] for r in rows if len(r) >= 3}
    attempts = {r[0]: r[2] for r in rows if len(r) >= 3}
    assert lines["train/loo-Asia"] == "failed" and attempts["train/loo-Asia"] == "1", status.stdout
    assert lines["train/loo-Africa"] == "done" and lines["train/loo-Europe"] == "done"
    assert lines["report"] == "cancelled"  # never ran: what it waited for failed

    again = study(slurm_cluster, "submit", spec)
    assert again.returncode == 0, again.stderr
    assert "done: train/loo-Africa" in again.stdout and "done: train/loo-Europe" in again.stdout
    assert again.stdout.count("$ sbatch") == 2  # loo-Asia and the report, nothing else
    ledger = json.load(open(os.path.join(out, "study", "ledger.json")))
    assert slurm_cluster.wait(ledger["train/loo-Asia"]["job"]) == "COMPLETED"
    assert slurm_cluster.wait(ledger["report"]["job"]) == "COMPLETED"
    report = open(os.path.join(out, "report", "study.md")).read()
    for name in ("loo-Africa", "loo-Asia", "loo-Europe"):
        assert f"| {name} | all but {name[4:]} | full | tiny | finished | 60 |" in report
