"""`megatron-meta train` end to end, as real processes: TP=2 and DP=2 over gloo with torchrun,
stop-and-resume, a TP=2 checkpoint resumed at TP=1, SIGTERM, and metrics.jsonl.

All runs train the `tiny` preset on the crafted corpus of ``training_support`` with the same
flags, so their per-iteration losses (log interval 1) can be compared with one baseline run.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys

import pytest
from training_support import (
    REPO,
    free_port,
    losses_by_iteration,
    read_metrics,
    run_cli,
    tiny_args,
    write_corpus,
)

from megatron_meta.training.checkpoint import TRACKER
from megatron_meta.training.config import load_yaml

pytestmark = pytest.mark.distributed

ITERS = 6


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("corpus")))


def train(manifest, save, nproc=1, **flags):
    result = run_cli(tiny_args(manifest, **{"--save": save, "--eval-interval": 3, **flags}), nproc)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def baseline(manifest, tmp_path_factory):
    """One process, TP=1: the uninterrupted reference run."""
    save = str(tmp_path_factory.mktemp("baseline"))
    train(manifest, save)
    losses = losses_by_iteration(save)
    assert sorted(losses) == list(range(1, ITERS + 1))
    return save, losses


def assert_close(losses, reference, iterations, rel=2e-5):
    for it in iterations:
        assert math.isclose(losses[it], reference[it], rel_tol=rel), (it, losses[it], reference[it])


def test_metrics_jsonl_config_and_tensorboard(baseline):
    save, losses = baseline
    records = read_metrics(save)
    keys = {"iteration", "loss", "lr", "grad_norm", "tokens_per_s", "tflops_per_gpu", "mfu"}
    for r in records:
        assert keys <= set(r)
        assert r["tokens_per_s"] > 0 and r["tflops_per_gpu"] > 0 and r["grad_norm"] > 0
        assert r["mfu"] is None  # no peak FLOP/s on the CPU without --peak-tflops
    evaluated = {r["iteration"]: r["val_loss"] for r in records if "val_loss" in r}
    assert sorted(evaluated) == [3, 6]
    assert set(evaluated[6]) == {"Africa", "Asia", "Europe"}
    assert all(0 < v < 10 for v in evaluated[6].values())
    assert losses[ITERS] < losses[1] - 0.5  # it learns
    # warmup 2 then cosine from 3e-3 to 3e-4 over iterations 3..6
    assert [r["lr"] for r in records][:3] == pytest.approx(
        [1.5e-3, 3e-3, 3e-4 + 2.7e-3 * 0.5 * (1 + math.cos(math.pi / 4))]
    )
    assert records[-1]["lr"] == pytest.approx(3e-4)
    resolved = load_yaml(os.path.join(save, "config.yaml"))
    assert resolved.model.seq_length == 32 and resolved.optimizer.lr == 3e-3
    assert resolved.checkpoint.save == save
    assert os.listdir(os.path.join(save, "tensorboard"))
    assert open(os.path.join(save, TRACKER)).read().strip() == str(ITERS)


def test_stop_and_resume_reproduces_the_uninterrupted_losses(manifest, baseline, tmp_path):
    save = str(tmp_path / "resumed")
    train(manifest, save, **{"--exit-interval": 3})
    assert sorted(losses_by_iteration(save)) == [1, 2, 3]
    train(manifest, save, **{"--load": save})
    assert losses_by_iteration(save) == baseline[1]  # bit for bit


def test_tensor_parallel_matches_tp1_and_its_checkpoint_resumes_at_tp1(
    manifest, baseline, tmp_path
):
    save = str(tmp_path / "tp2")
    result = train(
        manifest, save, nproc=2, **{"--tensor-model-parallel-size": 2, "--exit-interval": 4}
    )
    assert "world 2 = TP 2 x DP 1" in result.stderr
    assert_close(losses_by_iteration(save), baseline[1], range(1, 5))
    # The tensor-parallel gradient norm counts sharded weights once and replicated norms once.
    norms = {r["iteration"]: r["grad_norm"] for r in read_metrics(save)}
    assert_close(
        norms,
        {r["iteration"]: r["grad_norm"] for r in read_metrics(baseline[0])},
        range(1, 5),
        rel=1e-4,
    )
    # The TP=2 checkpoint (model and optimizer state) continues at TP=1.
    result = train(manifest, save, **{"--load": save})
    assert "loaded checkpoint" in result.stderr
    assert_close(losses_by_iteration(save), baseline[1], range(1, ITERS + 1))


def test_data_parallel_matches_one_process_with_the_same_global_batch(manifest, baseline, tmp_path):
    save = str(tmp_path / "dp2")
    result = train(manifest, save, nproc=2)
    assert "world 2 = TP 1 x DP 2" in result.stderr
    assert_close(losses_by_iteration(save), baseline[1], range(1, ITERS + 1))


def test_sigusr1_through_torchrun_saves_a_checkpoint_and_stops(manifest, tmp_path):
    """Slurm's warning signal, forwarded by torchrun to both ranks (--signals-to-handle)."""
    save = str(tmp_path / "preempted")
    args = tiny_args(manifest, **{"--save": save, "--train-iters": 500})
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            str(free_port()),
            "--signals-to-handle",
            "SIGTERM,SIGINT,SIGUSR1",
            "-m",
            "megatron_meta.cli",
            "train",
            *args,
        ],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        for line in proc.stderr:
            if "iteration       2/" in line:
                proc.send_signal(signal.SIGUSR1)
                break
        rest = proc.stderr.read()
        proc.wait(timeout=120)  # torchrun itself exits 1 after forwarding a signal
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rest.count("received SIGUSR1") == 2, rest[-3000:]
    saved = int(open(os.path.join(save, TRACKER)).read())
    assert 2 <= saved < 500
    assert f"stopped at iteration {saved} (SIGUSR1)" in rest
    assert os.path.isdir(os.path.join(save, f"iter_{saved:07d}"))
    assert max(losses_by_iteration(save)) == saved


def test_a_checkpoint_of_another_model_is_refused(manifest, baseline):
    result = run_cli(tiny_args(manifest, **{"--model": "smollm2-135m", "--load": baseline[0]}))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "holds a checkpoint of model 'tiny', not of --model 'smollm2-135m'" in result.stderr
