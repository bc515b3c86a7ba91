"""What the launcher decides after an attempt, told the facts Slurm gives (job state, node states,
the node logs): a user's cancel stays cancelled, a node failure is left to Slurm, a crash names
its rank, node and signal and is retried only with --max-failures; time limits that cannot work
are refused; checkpoint saves leave no helper processes; data-loader workers outlive SIGTERM."""

import os
import signal
import time

import psutil
import pytest

from megatron_meta.cluster import crash, requeue, run_state, time_limit
from megatron_meta.errors import ConfigError

TORCHRUN_FAILURE = """[rank1]: something
Root Cause (first observed failure):
[0]:
  time      : 2026-12-01_20:00:00
  host      : box
  rank      : {rank} (local_rank: 0)
  exitcode  : {code} (pid: 4242){name}
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 4242
"""


@pytest.fixture
def job(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")


def _logs(folder, node1_code=-9, node0_code=1):
    os.makedirs(folder, exist_ok=True)
    for index, (rank, code) in enumerate(((0, node0_code), (1, node1_code))):
        name = " (SIGKILL)" if code == -9 else ""
        with open(os.path.join(folder, f"node{index}.log"), "w") as f:
            f.write("training...\n" + TORCHRUN_FAILURE.format(rank=rank, code=code, name=name))
    return folder


def test_the_killed_rank_is_named_with_its_node_and_signal(tmp_path):
    logs = _logs(str(tmp_path / "logs"))
    cause = crash.root_cause(logs, ["n1", "n2"])
    assert cause.describe() == "rank 1 on node n2 (node 1) killed by SIGKILL"
    assert crash.root_cause(str(tmp_path / "empty"), ["n1"]) is None


def test_a_crash_is_recorded_and_retried_only_with_max_failures(job, tmp_path):
    run = str(tmp_path / "run")
    run_state.write_state(run, run_state.RunState("running", 20))
    cause = crash.root_cause(_logs(str(tmp_path / "logs")), ["n1", "n2"])
    d = requeue.decide(1, run, 10, 0, {"JobState": "RUNNING"}, (), cause)
    assert (d.action, d.ended) == ("fail", "crashed")
    assert "rank 1 on node n2 (node 1) killed by SIGKILL" in d.message
    assert "last checkpoint: iteration 20" in d.message and "--max-failures 0" in d.message
    requeue.record(run, d, 1, cause.node)
    state = run_state.read_state(run)
    assert state.state == "crashed" and state.iteration == 20 and "SIGKILL" in state.detail
    assert state.history[-1]["ended"] == "crashed" and state.history[-1]["node"] == "n2"

    # --max-failures: a crash is retried while failures <= N, then no more.
    run_state.write_state(run, run_state.RunState("running", 20))  # the retry started again
    assert len(run_state.read_state(run).history) == 1  # the history survives the trainer
    d = requeue.decide(1, run, 10, 2, {"JobState": "RUNNING"}, (), cause)
    assert d.action == "requeue" and "failure 2 of --max-failures 2" in d.message
    d = requeue.decide(1, run, 10, 1, {"JobState": "RUNNING"}, (), cause)
    assert d.action == "fail" and "--max-failures 1 reached" in d.message


def test_a_user_cancel_is_never_requeued_even_after_a_clean_save(job, tmp_path):
    run = str(tmp_path / "run")
    # scancel sends SIGTERM: the trainer saved and stopped, as it does when preempted.
    run_state.write_state(run, run_state.RunState("stopped", 8, "SIGTERM"))
    d = requeue.decide(143, run, 10, 0, {"JobState": "CANCELLED", "Reason": "None"})
    assert (d.action, d.ended) == ("fail", "cancelled") and "cancelled by the user" in d.message
    requeue.record(run, d, 143, None)
    assert run_state.read_state(run).state == "cancelled"
    run_state.write_state(run, run_state.RunState("stopped", 8, "SIGTERM"))
    # What scontrol shows while the cancelled job's batch script still runs: COMPLETING.
    d = requeue.decide(143, run, 10, 0, {"JobState": "COMPLETING", "Reason": "None"})
    assert (d.action, d.ended) == ("fail", "cancelled")
    d = requeue.decide(143, run, 10, 0, {"JobState": "COMPLETING", "Reason": "TimeLimit"})
    assert d.action == "requeue" and "time limit" in d.message
    # The same stop with the job still running is a preemption: requeued.
    run_state.write_state(run, run_state.RunState("stopped", 8, "SIGTERM"))
    d = requeue.decide(143, run, 10, 0, {"JobState": "RUNNING"})
    assert d.action == "requeue" and "preempted" in d.message
    d = requeue.decide(143, None, 10, 0, {"JobState": "CANCELLED"})  # a stage without a state
    assert d.action == "fail" and d.ended == "cancelled"


def test_a_node_failure_is_left_to_slurm_and_said_so(job, tmp_path):
    run = str(tmp_path / "run")
    run_state.write_state(run, run_state.RunState("running", 12))
    d = requeue.decide(1, run, 10, 1, {"JobState": "RUNNING", "Requeue": "1"}, ("n2 (IDLE*)",))
    assert d.action == "fail" and d.ended == "node-failure"
    assert "Slurm requeues the job itself" in d.message and "iteration 12" in d.message
    assert "not requeued; fix" not in d.message
    d = requeue.decide(1, run, 10, 0, {"JobState": "NODE_FAIL", "Requeue": "0", "NodeList": "n[1-2]"})
    assert "Slurm fails the job" in d.message
    d = requeue.decide(1, run, 10, 0, {"JobState": "PENDING", "Reason": "BeginTime"})
    assert d.ended == "requeued-by-slurm" and "already requeued" in d.message
    # Seen on the test cluster: the node came back before the launcher asked, and the requeued
    # job shows COMPLETING, like a cancel; its restart count tells Slurm requeued it.
    d = requeue.decide(1, run, 10, 0, {"JobState": "COMPLETING", "Reason": "None", "Restarts": "1"})
    assert d.ended == "requeued-by-slurm" and "Slurm requeued the job itself" in d.message


def test_slurm_times_and_limits_too_short_to_train():
    assert time_limit.parse_minutes("3") == 3
    assert time_limit.parse_minutes("1:30") == 1.5
    assert time_limit.parse_minutes("2:00:00") == 120
    assert time_limit.parse_minutes("1-12") == 2160
    assert time_limit.parse_minutes("2-00:30:00") == 2910
    assert time_limit.parse_minutes("UNLIMITED") is None
    with pytest.raises(ConfigError, match="--time 1x"):
        time_limit.parse_minutes("1x")
    assert time_limit.signal_lead_seconds(3) == 30 and time_limit.signal_lead_seconds(2880) == 180
    # The margin shrinks with the limit, so a 5-minute job trains (it stopped after 0.0 min).
    assert time_limit.exit_margin_mins(5, 5.0) == 1.0 and time_limit.exit_margin_mins(600, 5) == 5
    time_limit.check_limit(5)
    time_limit.check_limit(None)
    with pytest.raises(ConfigError, match=r"--time 2 min is too short.*--time 3 or more"):
        time_limit.check_limit(2)


def test_the_stop_clock_widens_its_margin_to_the_measured_save(monkeypatch):
    from megatron_meta.training import stopping

    monkeypatch.setattr(stopping.slurm_job, "end_time", lambda: time.time() + 300)
    monkeypatch.setattr(stopping.slurm_job, "time_limit_mins", lambda: 5.0)
    clock = stopping.StopClock(None, 5.0)
    assert clock.margin_s == 60.0 and 235 < clock.deadline - time.monotonic() <= 240
    clock.measured(iteration_s=20.0, save_s=30.0)  # 2 x 50 s + 10 s
    assert clock.margin_s == 110.0 and not clock.time_up()
    clock.measured(iteration_s=1.0, save_s=1.0)  # never narrower again
    assert clock.margin_s == 110.0
    assert stopping.StopClock(1e-9, 5.0).time_up()


def test_partial_checkpoints_are_removed_and_others_kept(tmp_path):
    from megatron_meta.checkpoints.hygiene import remove_partial_checkpoints

    for name in ("iter_0000028.tmp", "iter_0000020"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.distcp").write_bytes(b"0" * 10)
    assert remove_partial_checkpoints(str(tmp_path)) == [str(tmp_path / "iter_0000028.tmp")]
    assert sorted(os.listdir(tmp_path)) == ["iter_0000020"]


SAVE_TWICE = """
import json, os, sys
import psutil, torch
from megatron.core.dist_checkpointing.mapping import ShardedTensor
from megatron_meta.checkpoints.write import save_state
from megatron_meta.parallel import destroy_parallel, initialize_parallel

if __name__ == "__main__":  # dist_checkpointing's helpers (if any) would be spawned
    initialize_parallel(1, 0)
    for iteration in (1, 2):
        w = torch.arange(6, dtype=torch.float32) * iteration
        save_state(sys.argv[1], iteration, {"w": ShardedTensor.from_rank_offsets("w", w, replica_id=0)})
    left = [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)]
    destroy_parallel()
    print(json.dumps(left))
"""


def test_a_checkpoint_save_leaves_no_helper_process(tmp_path):
    """megatron-core's writer would start a spawn Manager and a resource tracker that outlive
    the save (and that Slurm's preemption signal kills): none may be left."""
    import json
    import subprocess
    import sys

    script = tmp_path / "save_twice.py"
    script.write_text(SAVE_TWICE)
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ckpt")],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    assert sorted(os.listdir(tmp_path / "ckpt")) == [
        "iter_0000001", "iter_0000002", "latest_checkpointed_iteration.txt"
    ]


class _Numbers(__import__("torch").utils.data.Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        time.sleep(0.02)
        return i


def test_data_loader_workers_ignore_the_stop_signals():
    import torch

    from megatron_meta.training.data import ignore_stop_signals

    loader = torch.utils.data.DataLoader(
        _Numbers(), batch_size=4, num_workers=2, worker_init_fn=ignore_stop_signals
    )
    previous = signal.signal(signal.SIGTERM, lambda *a: None)  # the trainer's own handler
    try:
        it = iter(loader)
        got = [next(it)]
        workers = psutil.Process().children()
        assert len(workers) >= 2
        for w in workers:
            os.kill(w.pid, signal.SIGTERM)
            os.kill(w.pid, signal.SIGUSR1)
        got += list(it)
        assert torch.cat(got).tolist() == list(range(64))
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_study_with_a_time_too_short_is_refused_before_submitting(tmp_path):
    import subprocess
    import sys

    from training_support import REPO

    spec = tmp_path / "s.yaml"
    spec.write_text(f"""
name: short
output_dir: {tmp_path / 'out'}
regions: [Asia]
data: {{manifest: m.json}}
defaults:
  train: {{model: tiny}}
  slurm: {{time: "0:02:00"}}
runs: [{{name: a}}]
""")
    out = subprocess.run(
        [sys.executable, "-m", "megatron_meta.cli", "study", "submit", str(spec), "--dry-run"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert out.returncode == 2, out.stderr
    # reported by the study's preflight beside its other problems (here the missing manifest)
    assert "slurm.time (train/a): slurm time: --time 2 min is too short" in out.stderr, out.stderr
    assert "m.json: not found" in out.stderr and "2 problem(s), nothing was run" in out.stderr
    assert "Traceback" not in out.stderr and not os.path.exists(tmp_path / "out")
    from training_support import write_corpus

    manifest = write_corpus(str(tmp_path / "corpus"))
    spec.write_text(spec.read_text().replace('"0:02:00"', '"0:10:00"').replace("m.json", manifest))
    out = subprocess.run(
        [sys.executable, "-m", "megatron_meta.cli", "study", "submit", str(spec), "--dry-run"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert out.returncode == 0 and "--signal=USR1@60" in out.stdout, out.stderr


def test_a_resubmitted_run_avoids_the_nodes_it_crashed_on(tmp_path):
    from megatron_meta.study.graph import build_graph
    from megatron_meta.study.slurm import sbatch_options
    from megatron_meta.study.spec import load_study

    spec = tmp_path / "s.yaml"
    spec.write_text(f"""
name: x
output_dir: {tmp_path / 'out'}
regions: [Asia]
data: {{manifest: m.json}}
defaults: {{train: {{model: tiny}}, slurm: {{time: 30}}}}
runs: [{{name: a}}]
""")
    study = load_study(str(spec))
    node = next(n for n in build_graph(study) if n.kind == "train")
    assert not [o for o in sbatch_options(study, node) if o.startswith("--exclude")]
    state = run_state.RunState("crashed", 10)
    state.history = [{"ended": "crashed", "node": "gpu7"}, {"ended": "stopped", "node": None}]
    run_state.write_state(node.output, state)
    assert "--exclude=gpu7" in sbatch_options(study, node)


def test_a_run_killed_before_it_wrote_its_state_is_recorded_as_crashed(job, tmp_path):
    run = str(tmp_path / "run")
    cause = crash.root_cause(_logs(str(tmp_path / "logs")), ["n1", "n2"])
    d = requeue.decide(1, run, 10, 0, {"JobState": "RUNNING"}, (), cause, training=True)
    assert d.ended == "crashed" and "last checkpoint: none yet" in d.message
    requeue.record(run, d, 1, cause.node, training=True)
    state = run_state.read_state(run)
    assert state.state == "crashed" and "SIGKILL" in state.detail
    # Not a training run (a conversion's --save): its exit code decides, nothing is written.
    other = str(tmp_path / "convert")
    d = requeue.decide(1, other, 10, 0, {"JobState": "RUNNING"}, (), cause)
    assert d.ended == "failed"
    requeue.record(other, d, 1, None)
    assert not os.path.exists(other)


def test_the_launchers_own_ending_names_the_killed_rank(tmp_path):
    """``python -m megatron_meta.launch`` replaces torchrun's summary with its own message; the
    crash reader still finds which rank died and how, from a real launch."""
    import signal
    import subprocess
    import sys

    script = tmp_path / "die.py"
    script.write_text(
        "import os, signal, time\n"
        "if os.environ['RANK'] == '1':\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "time.sleep(60)\n"
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    with open(logs / "node0.log", "w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "megatron_meta.launch", "--nproc-per-node", "2",
             "--master-port", "0", str(script)],
            stdout=out, stderr=subprocess.STDOUT, timeout=120,
        )
    assert proc.returncode != 0
    text = (logs / "node0.log").read_text()
    last = text.rstrip().splitlines()[-1]
    assert "Traceback" not in text and last.startswith("megatron-meta launch: error:")
    assert "rank 1 stopped (signal SIGKILL) without a message" in last, last
    cause = crash.root_cause(str(logs), ["n1"])
    assert cause.describe() == f"rank 1 on node n1 (node 0) killed by {signal.SIGKILL.name}"
