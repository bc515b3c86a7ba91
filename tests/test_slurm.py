"""On a real two-node Slurm cluster: the launcher, preemption after checkpoints (twice in one
run), a user's cancel, a killed rank (with and without --max-failures), a time limit too short,
the preprocessing array and its merge, and a study graph (``megatron-meta study
submit/status/logs/cancel/report``, from a snapshot). CPU, the ``tiny`` model, gloo."""

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

ITERS = 80  # tiny iterations take ~0.1 s: long enough to signal a run between its saves
KILLED_ITERS = 400
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


def pretrain(cluster, manifest, save, *sbatch_flags, nodes=2, time_limit=20, launcher=(), **flags):
    args = tiny_args(manifest, **{"--save": save, "--train-iters": ITERS, **flags})
    return sbatch(
        cluster,
        "--nodes",
        str(nodes),
        "--time",
        str(time_limit),
        "--output",
        f"{save}.out",
        *sbatch_flags,
        "slurm/pretrain.sbatch",
        "--env",
        VENV,
        *launcher,
        "--",
        *args,
    )


def out_of(save):
    return open(f"{save}.out").read()[-4000:] if os.path.exists(f"{save}.out") else "(no output)"


def wait_for(predicate, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def iterations_logged(save):
    path = os.path.join(save, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    lines = [json.loads(x) for x in open(path).read().splitlines() if x.strip()]
    return lines[-1]["iteration"] if lines else 0


def saved(save, iteration):
    return os.path.isdir(os.path.join(save, f"iter_{iteration:07d}"))


def release_requeued(cluster, job, restarts):
    """Wait until the requeued job is PENDING (and a moment more: an update in the same second
    as the requeue makes Slurm fail it, "Job credential revoked"), then start it now instead of
    Slurm's two-minute hold."""
    wait_for(lambda: cluster.job_field(job, "Restarts") == str(restarts), 180, f"restart {restarts}")
    wait_for(lambda: cluster.job_field(job, "JobState") == "PENDING", 60, "PENDING")
    time.sleep(2)
    cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now", check=True)


def job_processes(job):
    """Processes still running for a job (helpers that outlived it would be listed)."""
    rows = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.environ().get("SLURM_JOB_ID") == job:
                rows.append(f"{p.pid}: {' '.join(p.info['cmdline'] or [])[:100]}")
        except (psutil.Error, OSError):
            continue
    return rows


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
    assert "Slurm job ends in" in node0 and f"run finished at iteration {ITERS}" in out
    assert "[rank1]:" in open(os.path.join(logs, "node1.log")).read()  # not [default0] twice
    time.sleep(2)
    assert job_processes(job) == []  # no checkpoint helper outlives the job


def test_preemption_after_one_and_two_saves_twice_in_one_run(
    slurm_cluster, manifest, local_two_ranks, tmp_path
):
    """USR1 after the first checkpoint, SIGTERM after the second: with dist_checkpointing's
    helper processes gone and data-loader workers (--num-workers 2) ignoring the signals, both
    attempts save, requeue and resume; nothing is lost or repeated."""
    save = str(tmp_path / "preempted")
    job = pretrain(
        slurm_cluster, manifest, save, "--dependency", "singleton",
        **{"--save-interval": 20, "--num-workers": 2},
    )
    wait_for(lambda: saved(save, 20) and iterations_logged(save) >= 21, 240, "the first save")
    slurm_cluster.run("scancel", "--signal=USR1", job, check=True)
    release_requeued(slurm_cluster, job, 1)
    wait_for(
        lambda: os.path.isdir(os.path.join(save, "logs", f"{job}_1"))
        and saved(save, 40) and iterations_logged(save) >= 41,
        240,
        "the second attempt's save at 40",
    )
    slurm_cluster.run("scancel", "--signal=TERM", job, check=True)
    release_requeued(slurm_cluster, job, 2)
    assert slurm_cluster.wait(job) == "COMPLETED", out_of(save)
    out = out_of(save)
    assert "requeueing (restart 1" in out and "requeueing (restart 2" in out, out
    assert f"run finished at iteration {ITERS}" in out and "BrokenPipeError" not in out
    assert os.path.isdir(os.path.join(save, "logs", f"{job}_2"))  # the third attempt's logs
    assert_same_losses(save, local_two_ranks)
    state = json.load(open(os.path.join(save, "run_state.json")))
    assert state["state"] == "finished"
    ended = [(h["attempt"], h["ended"], h["reason"]) for h in state["history"]]
    assert ended == [(0, "stopped", "SIGUSR1"), (1, "stopped", "SIGTERM"), (2, "finished", None)]
    first, second = (h["iteration"] for h in state["history"][:2])
    assert 20 < first < 40 < second < ITERS, (first, second)  # after one save, after two
    assert not [f for f in os.listdir(save) if f.endswith(".tmp")]
    time.sleep(2)
    assert job_processes(job) == []


def test_cancel_stays_cancelled_a_killed_rank_is_retried_once_and_a_short_time_is_refused(
    slurm_cluster, manifest, local_two_ranks, tmp_path
):
    short, cancelled, killed = (str(tmp_path / n) for n in ("short", "cancelled", "killed"))
    short_job = pretrain(slurm_cluster, manifest, short, nodes=1, time_limit=2)
    cancel_job = pretrain(slurm_cluster, manifest, cancelled, nodes=1, **{"--save-interval": 10})
    kill_job = pretrain(  # long enough to find its rank (psutil on a busy machine) and kill it
        slurm_cluster, manifest, killed, nodes=1, launcher=("--max-failures", "1"),
        **{"--save-interval": 10, "--train-iters": KILLED_ITERS},
    )
    # --time 2: refused when the job starts, said once, never requeued.
    assert slurm_cluster.wait(short_job) == "FAILED"
    assert "--time 2 min is too short" in out_of(short)
    assert slurm_cluster.job_field(short_job, "Restarts") == "0"

    # A plain scancel once a checkpoint exists: the trainer saves on SIGTERM, as when preempted,
    # but the launcher sees a user's cancel and does not requeue.
    wait_for(lambda: saved(cancelled, 10), 240, "a checkpoint of the cancelled run")
    slurm_cluster.run("scancel", cancel_job, check=True)
    assert slurm_cluster.wait(cancel_job) == "CANCELLED"

    # Kill the only rank of the other job after its first checkpoint: crashed, retried once.
    victims = []
    wait_for(lambda: saved(killed, 10), 240, "killed's first checkpoint")
    wait_for(lambda: victims.append(_rank0_of(kill_job)) or victims[-1], 240, "killed's rank")
    first_node = slurm_cluster.job_field(kill_job, "NodeList")
    victims[-1].kill()
    victims[-1].wait(timeout=30)  # gone: the rank that trains, not a helper it forked
    time.sleep(1)
    last = int(open(os.path.join(killed, "latest_checkpointed_iteration.txt")).read())
    release_requeued(slurm_cluster, kill_job, 1)
    assert slurm_cluster.wait(kill_job) == "COMPLETED", out_of(killed)
    out = out_of(killed)
    assert f"run crashed: rank 0 on node {first_node} (node 0) killed by SIGKILL" in out, out
    assert f"last checkpoint: iteration {last}" in out and "failure 1 of --max-failures 1" in out
    state = json.load(open(os.path.join(killed, "run_state.json")))
    assert [(h["ended"], h["iteration"]) for h in state["history"]] == [
        ("crashed", last), ("finished", KILLED_ITERS)
    ]
    losses = losses_by_iteration(killed)
    assert sorted(losses) == list(range(1, KILLED_ITERS + 1))

    time.sleep(5)  # the cancel stays: no requeue came after it
    assert slurm_cluster.job_field(cancel_job, "JobState") == "CANCELLED"
    assert slurm_cluster.job_field(cancel_job, "Restarts") == "0"
    state = json.load(open(os.path.join(cancelled, "run_state.json")))
    assert state["state"] == "cancelled" and state["detail"] == "cancelled by the user (scancel)"
    assert "run cancelled by the user" in out_of(cancelled)


def test_preprocess_array_and_merge_equal_one_run_and_a_failed_part_cancels_the_merge(
    slurm_cluster, tmp_path
):
    import filecmp

    from preprocess_fixtures import make_documents, write_jsonl

    from megatron_meta.manifest import load_manifest

    docs = make_documents(30, seed=3)
    corpus = write_jsonl(str(tmp_path / "news.jsonl"), docs)
    tok_prefix = str(tmp_path / "tok")
    trained = run_mm("train-tokenizer", "--input", corpus, "--metadata-variants", "full,none",
                     "--vocab-size", "500", "--output-prefix", tok_prefix)
    assert trained.returncode == 0, trained.stderr[-2000:]
    common = ["--input", corpus, "--tokenizer-type", "SentencePieceTokenizer",
              "--tokenizer-model", tok_prefix + ".model", "--metadata-variants", "full,none",
              "--split-by", "continent", "--holdout-test", "1", "--holdout-valid-fraction", "0.1",
              "--seed", "42", "--append-eod", "--workers", "0", "--no-progress"]  # fmt: skip
    one = run_mm("preprocess", *common, "--output-prefix", str(tmp_path / "one" / "news"))
    assert one.returncode == 0, one.stderr[-2000:]
    prefix = str(tmp_path / "slurm" / "news")
    sub = subprocess.run(
        ["bash", "slurm/preprocess.sbatch", "--parts", "2", "--env", VENV, "--time", "10",
         "--", *common, "--output-prefix", prefix],
        cwd=REPO, env=job_env(slurm_cluster), capture_output=True, text=True,
    )  # fmt: skip
    assert sub.returncode == 0, sub.stderr
    parts, merge = _ids(sub.stdout)
    assert slurm_cluster.wait(merge) == "COMPLETED", _logs(prefix)
    a, b = load_manifest(str(tmp_path / "one" / "news.manifest.json")), load_manifest(prefix + ".manifest.json")
    assert len(a.shards) == len(b.shards) == 8
    for x, y in zip(a.shards, b.shards):
        for ext in (".bin", ".idx", ".metadata_tokens.npy"):
            assert filecmp.cmp(x.prefix + ext, y.prefix + ext, shallow=False), (x.prefix, ext)
    logs = sorted(os.listdir(prefix + "-logs"))
    assert logs == [f"merge-{merge}.out"] + [f"part-{parts}_{i}.out" for i in range(2)], logs
    assert not [f for f in os.listdir(REPO) if f.startswith("slurm-")]

    # A corrupt record with --on-bad-record error: the parts fail, the merge is cancelled
    # (--kill-on-invalid-dep) instead of waiting forever, and the error is in the part's log.
    bad = write_jsonl(str(tmp_path / "bad.jsonl"), docs, ["{not json"])
    failing = [bad if c == corpus else c for c in common]
    prefix = str(tmp_path / "failing" / "news")
    sub = subprocess.run(
        ["bash", "slurm/preprocess.sbatch", "--parts", "2", "--env", VENV,
         "--", *failing, "--output-prefix", prefix, "--on-bad-record", "error"],
        cwd=REPO, env=job_env(slurm_cluster), capture_output=True, text=True,
    )  # fmt: skip
    assert sub.returncode == 0, sub.stderr
    parts, merge = _ids(sub.stdout)
    assert slurm_cluster.wait(merge, timeout=180) == "CANCELLED", _logs(prefix)
    states = [slurm_cluster.wait(f"{parts}_{i}") for i in range(2)]
    assert "FAILED" in states, states
    failed = states.index("FAILED")
    assert "bad.jsonl" in open(f"{prefix}-logs/part-{parts}_{failed}.out").read()


def _ids(stdout):
    import re

    m = re.search(r"parts: job (\d+) .* merge: job (\d+)", stdout)
    assert m, stdout
    return m.group(1), m.group(2)


def _logs(prefix):
    folder = prefix + "-logs"
    if not os.path.isdir(folder):
        return "(no logs)"
    return "\n".join(f"{n}:\n{open(os.path.join(folder, n)).read()[-1500:]}" for n in sorted(os.listdir(folder)))


def run_mm(*args):
    return subprocess.run(
        [sys.executable, "-m", "megatron_meta.cli", *args],
        cwd=REPO, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )


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


def study(cluster, *args, code=REPO):
    """``megatron-meta study ...`` run from the checkout ``code`` (its package imported)."""
    return subprocess.run(
        [sys.executable, "-m", "megatron_meta.cli", "study", *args],
        cwd=REPO,
        env={**job_env(cluster), "PYTHONPATH": code},
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
    """The rank-0 training process of a job (found by its Slurm job id, killed by pid): the
    topmost one, not a process it forked (checkpoint writers, loader workers share its
    environment and command line), and only once it has started training."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            env = p.environ()
        except (psutil.Error, OSError):
            continue
        cmdline = " ".join(p.info["cmdline"] or [])
        if (
            env.get("SLURM_JOB_ID") == job_id
            and env.get("RANK") == "0"
            and "megatron_meta.cli train" in cmdline
            and "megatron_meta.launch" not in cmdline
        ):
            found.append(p)
    pids = {p.pid for p in found}
    for p in found:
        try:
            if p.ppid() not in pids:
                return p
        except psutil.Error:
            continue
    return None


def test_study_array_crash_status_logs_cancel_resubmit_and_report(slurm_cluster, manifest, tmp_path):
    import shutil

    spec = _study(tmp_path, manifest)
    out = str(tmp_path / "out")
    # A user's checkout, edited after submitting: the queued jobs must not see the edit.
    checkout = str(tmp_path / "checkout")
    for sub in ("megatron_meta", "slurm"):
        shutil.copytree(os.path.join(REPO, sub), os.path.join(checkout, sub),
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    dry = study(slurm_cluster, "submit", spec, "--dry-run", code=checkout)
    assert dry.returncode == 0, dry.stderr
    assert (
        dry.stdout.count("--array=0-2") == 1
        and "afterok:<train@0>_0:<train@0>_1:<train@0>_2" in dry.stdout
    )
    assert not os.path.exists(out)  # a dry run writes nothing

    first = study(slurm_cluster, "submit", spec, code=checkout)
    assert first.returncode == 0, first.stderr
    with open(os.path.join(checkout, "slurm", "launch.sh"), "w") as f:
        f.write("#!/bin/bash\necho edited checkout; exit 7\n")
    with open(os.path.join(checkout, "megatron_meta", "cli.py"), "w") as f:
        f.write("raise SystemExit('edited checkout')\n")
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
    state = json.load(open(os.path.join(out, "runs", "loo-Asia", "run_state.json")))
    assert state["state"] == "crashed" and "rank 0 on node n" in state["detail"], state
    assert "killed by SIGKILL" in state["detail"]
    logs = study(slurm_cluster, "logs", spec, "train/loo-Asia", code=REPO)
    assert logs.returncode == 0, logs.stderr
    assert f"logs/slurm/train-0-{crashed}.out" in logs.stdout and "node0.log" in logs.stdout
    assert "run crashed: rank 0 on node" in logs.stdout and "--max-failures 0" in logs.stdout
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
    # Cancel the report while it waits: cancelled, and a later submit brings it back.
    cancel = study(slurm_cluster, "cancel", spec, "report")
    assert cancel.returncode == 0 and "cancelled: report (job" in cancel.stdout, cancel.stderr
    assert slurm_cluster.wait(ledger["report"]["job"]) == "CANCELLED"
    assert slurm_cluster.wait(ledger["train/loo-Asia"]["job"]) == "COMPLETED"
    status = study(slurm_cluster, "status", spec)
    assert "report" in status.stdout and " cancelled " in status.stdout, status.stdout
    ledger = json.load(open(os.path.join(out, "study", "ledger.json")))
    assert ledger["report"]["state"] == "cancelled" and ledger["train/loo-Asia"]["state"] == "done"
    last = study(slurm_cluster, "submit", spec)
    assert last.returncode == 0 and last.stdout.count("$ sbatch") == 1, last.stdout
    ledger = json.load(open(os.path.join(out, "study", "ledger.json")))
    assert slurm_cluster.wait(ledger["report"]["job"]) == "COMPLETED"
    snapshots = os.listdir(os.path.join(out, "study", "snapshots"))
    assert len(snapshots) == 3  # one per submission that submitted something
    report = open(os.path.join(out, "report", "study.md")).read()
    for name in ("loo-Africa", "loo-Asia", "loo-Europe"):
        assert f"| {name} | all but {name[4:]} | full | tiny | finished | 60 |" in report


def test_a_node_failure_is_left_to_slurm_and_the_run_resumes_from_its_checkpoint(
    slurm_cluster, manifest, tmp_path
):
    """slurmd of the second node killed mid-run: Slurm (SlurmdTimeout 30 s here) marks the node
    DOWN and requeues the --requeue job itself; the launcher must not claim otherwise. Once the
    node is back, the job resumes from its last checkpoint."""
    import re

    save = str(tmp_path / "node-failure")
    job = pretrain(slurm_cluster, manifest, save, **{"--train-iters": 5000, "--save-interval": 20})
    wait_for(lambda: saved(save, 20), 240, "the first checkpoint")
    slurm_cluster.kill_slurmd("n2")
    try:
        wait_for(lambda: slurm_cluster.job_field(job, "Restarts") == "1", 180, "Slurm's requeue")
        assert "DOWN" in slurm_cluster.node_state("n2")
        tracker = os.path.join(save, "latest_checkpointed_iteration.txt")
        time.sleep(3)
    finally:
        slurm_cluster.start_slurmd("n2")
    wait_for(lambda: "DOWN" not in slurm_cluster.node_state("n2"), 120, "n2 back in service")
    last = int(open(tracker).read())
    out = out_of(save)
    assert "not requeued; fix the cause" not in out and "requeueing (restart" not in out, out
    assert "cancelled by the user" not in out, out
    if "megatron-meta launcher:" in out:  # unless Slurm's kill came first: what Slurm does
        assert "Slurm requeued the job itself" in out or "node failure" in out, out
    release_requeued(slurm_cluster, job, 1)
    node0 = os.path.join(save, "logs", f"{job}_1", "node0.log")
    wait_for(lambda: os.path.exists(node0) and "loaded checkpoint" in open(node0).read(), 240,
             "the second attempt's load")  # fmt: skip
    loaded = int(re.search(r"loaded checkpoint \S+ \(iteration (\d+)\)", open(node0).read())[1])
    assert loaded == last
    assert not [f for f in os.listdir(save) if f.endswith(".tmp")]
    slurm_cluster.run("scancel", job, check=True)
    assert slurm_cluster.wait(job) == "CANCELLED"
