"""The Slurm executor: each node not done becomes a job (an array where runs share a command
shape), chained with ``--dependency=afterok``; the ledger keeps node -> job id and state.

Submitting again skips done nodes and live jobs (pending, running) and resubmits only what
failed or is missing. Every job runs ``slurm/study_task.sbatch`` -> ``slurm/launch.sh``, which
requeues a preempted or timed-out training run by itself. Each submission runs from its own
snapshot of the code and recipes (:mod:`.snapshot`), so editing the working tree never changes
queued jobs. :func:`check_submission` refuses settings that cannot work (a ``time`` too short
to train in) before anything is submitted; the study's preflight can call it too.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from typing import Dict, List, Optional, Tuple

from megatron_meta.cluster import run_state, time_limit
from megatron_meta.errors import ConfigError, MegatronMetaError
from megatron_meta.study.graph import Node
from megatron_meta.study.kinds import KINDS
from megatron_meta.study.ledger import Ledger
from megatron_meta.study.snapshot import take_snapshot
from megatron_meta.study.spec import Study

LIVE = {
    "PENDING": "pending",
    "CONFIGURING": "pending",
    "REQUEUED": "pending",
    "REQUEUE_HOLD": "pending",
    "RUNNING": "running",
    "COMPLETING": "running",
    "SUSPENDED": "pending",
    "RESIZING": "running",
}


def repo_root() -> str:
    root = os.environ.get("MM_HOME") or os.path.dirname(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    )
    if not os.path.isfile(os.path.join(root, "slurm", "launch.sh")):
        raise ConfigError(
            f"slurm/launch.sh not found under {root}: set MM_HOME to a megatron-meta checkout"
        )
    return root


def _settings(study: Study, node: Node) -> Dict:
    return {**study.slurm, **(study.stages.get(node.kind, {}).get("slurm") or {})}


def log_stem(study: Study, node: Node, array: bool) -> str:
    """The Slurm output file of a node's job, before ``-JOB.out`` (``-ARRAY_TASK.out``)."""
    name = node.group if array else node.name
    return os.path.join(study.output_dir, "logs", "slurm", name.replace("/", "_").replace("@", "-"))


def time_minutes(study: Study, node: Node) -> Optional[float]:
    value = _settings(study, node).get("time")
    return None if value is None else time_limit.parse_minutes(str(value))


def check_submission(study: Study, nodes: List[Node]) -> None:
    """Refuse Slurm settings that cannot work, naming the key (ConfigError): a training job's
    ``time`` too short for start-up, some training and the margin of its last save."""
    for node in nodes:
        if KINDS[node.kind].launcher != "torchrun":
            continue
        try:
            time_limit.check_limit(time_minutes(study, node))
        except ConfigError as e:
            raise ConfigError(f"{study.path}: {node.name}: slurm time: {e}") from None


def sbatch_options(study: Study, node: Node, array: Optional[str] = None) -> List[str]:
    """``sbatch`` options of a node's job (site settings from defaults.slurm and the stage)."""
    s = _settings(study, node)
    training = KINDS[node.kind].launcher == "torchrun"
    log = log_stem(study, node, bool(array))
    opts = [
        "--parsable",
        "--job-name",
        f"{study.name}:{node.name if not array else node.group}",
        "--output",
        log + ("-%A_%a.out" if array else "-%j.out"),
        "--open-mode=append",
        "--requeue",
        "--nodes",
        str(s.get("nodes", 1) if training else 1),
        "--ntasks-per-node",
        "1",
        "--chdir",
        os.getcwd(),
    ]
    for key, flag in (
        ("partition", "--partition"),
        ("account", "--account"),
        ("qos", "--qos"),
        ("time", "--time"),
        ("cpus_per_task", "--cpus-per-task"),
        ("gpus_per_node", "--gpus-per-node"),
        ("mem", "--mem"),
    ):
        if s.get(key) is not None:
            opts += [flag, str(s[key])]
    if training:  # a warning before the limit, in proportion to it (the trainer's clock is first)
        lead = s.get("signal_seconds") or time_limit.signal_lead_seconds(time_minutes(study, node))
        opts.append(f"--signal=USR1@{lead}")
    if training and not array:
        opts += _exclude_crashed(node)
    if array:
        opts.append(f"--array={array}")
    return opts + [str(x) for x in s.get("extra", [])]


def _exclude_crashed(node: Node) -> List[str]:
    """``--exclude`` the nodes this run crashed on before (its run state's history)."""
    rs = run_state.read_state(node.output)
    bad = sorted({h["node"] for h in (rs.history if rs else []) if h.get("ended") == "crashed"
                  and h.get("node")})  # fmt: skip
    return [f"--exclude={','.join(bad)}"] if bad else []


def launcher_options(study: Study, node: Node) -> List[str]:
    s = _settings(study, node)
    opts = (
        [
            "--torchrun",
            "--gpus-per-node",
            str(s.get("nproc_per_node") or s.get("gpus_per_node") or 1),
        ]
        if KINDS[node.kind].launcher == "torchrun"
        else []
    )
    opts += ["--max-restarts", str(s.get("max_restarts", 10))]
    if s.get("max_failures"):
        opts += ["--max-failures", str(s["max_failures"])]
    for key, flag in (
        ("env", "--env"),
        ("container_image", "--container-image"),
        ("container_mounts", "--container-mounts"),
    ):
        if s.get(key):
            opts += [flag, str(s[key])]
    return opts


def live_jobs() -> Dict[str, str]:
    """Job id (array tasks as ``A_T``) -> Slurm state, for jobs squeue still shows."""
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True, text=True)
    if out.returncode:
        raise MegatronMetaError(f"squeue failed: {out.stderr.strip()}")
    return dict(line.split()[:2] for line in out.stdout.splitlines() if line.strip())


def finished_job(job: str) -> Tuple[Optional[str], int]:
    """(JobState, Restarts) of a job: slurmctld's while it remembers it (``MinJobAge``), then
    the accounting database's (``sacct``, where there is one); else (None, 0)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True)
    fields = dict(f.split("=", 1) for f in out.stdout.split() if "=" in f)
    if fields.get("JobState"):
        return fields.get("JobState"), int(fields.get("Restarts", "0") or 0)
    try:
        acct = subprocess.run(
            ["sacct", "-n", "-P", "-X", "-j", job, "-o", "State"],
            capture_output=True, text=True, timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None, 0
    lines = [line.split()[0] for line in acct.stdout.splitlines() if line.strip()]
    return (lines[-1] if acct.returncode == 0 and lines else None), 0


def node_state(node: Node, entry: Dict, live: Dict[str, str]) -> Tuple[str, int]:
    """(done | pending | running | failed | preempted | cancelled | missing, attempts)."""
    job = entry.get("job")
    state, restarts = finished_job(job) if job else (None, 0)
    attempts = restarts + 1 if job else 0
    if node.done():
        return "done", attempts
    if not job:
        return "missing", 0
    if job in live:
        return LIVE.get(live[job], live[job].lower()), attempts
    rs = run_state.read_state(node.output) if node.kind == "train" else None
    if rs is not None and rs.resumable:
        return "preempted", attempts
    if state == "CANCELLED":  # by a user, or because a job it waited for failed
        return "cancelled", attempts
    return "failed", attempts


def sbatch(cmd: List[str], dry_run: bool, placeholder: str, env: Dict[str, str]) -> str:
    print("$ " + shlex.join(cmd), flush=True)
    if dry_run:
        return placeholder
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise MegatronMetaError(f"sbatch failed: {out.stderr.strip()}")
    return out.stdout.strip().split(";")[0]


def submit(study: Study, nodes: List[Node], dry_run: bool = False) -> Dict[str, str]:
    """Submit what is not done or live; returns node -> job id (``<node>`` in a dry run)."""
    check_submission(study, nodes)
    root = repo_root()
    ledger = Ledger(study.output_dir)
    live = {} if dry_run else live_jobs()
    jobs: Dict[str, str] = {}
    todo: List[Node] = []
    for node in nodes:
        entry = ledger.get(node.name)
        state, _ = ("missing", 0) if dry_run and not node.done() else node_state(node, entry, live)
        if state == "done":
            print(f"done: {node.name}")
        elif state in ("pending", "running"):
            jobs[node.name] = entry["job"]
            print(f"{state}: {node.name} (job {entry['job']})")
        else:
            todo.append(node)
    groups: Dict[str, List[Node]] = {}
    for node in todo:
        groups.setdefault(node.group, []).append(node)
    if todo and not dry_run:
        snap = take_snapshot(root, study, todo)
        os.makedirs(os.path.join(study.output_dir, "logs", "slurm"), exist_ok=True)
        root = snap.root
    script = os.path.join(root, "slurm", "study_task.sbatch")
    # MM_CODE: the jobs import the snapshot's package, not the checkout's.
    env = dict(os.environ, MM_HOME=root, MM_CODE=root, MM_LOG_ROOT=study.output_dir)
    for node in todo:
        group = groups[node.group]
        if node.name in jobs:
            continue
        dep_ids = lambda n: sorted({jobs[d] for d in n.deps if d in jobs})  # noqa: E731
        same = len(group) > 1 and all(dep_ids(n) == dep_ids(group[0]) for n in group)
        members = group if same else [node]
        deps = dep_ids(node)
        missing = [d for d in node.deps if d not in jobs and not _done(nodes, d)]
        if missing:
            raise MegatronMetaError(
                f"{node.name} waits for {', '.join(missing)}, which was not submitted"
            )
        dependency = (
            [f"--dependency=afterok:{':'.join(deps)}", "--kill-on-invalid-dep=yes"] if deps else []
        )
        if len(members) > 1:
            tasks = os.path.join(root, "tasks", node.group.replace("@", "-") + ".txt")
            if not dry_run:
                os.makedirs(os.path.dirname(tasks), exist_ok=True)
                with open(tasks, "w", encoding="utf-8") as f:
                    f.writelines(shlex.join(snap.args(n)) + "\n" for n in members)
            throttle = _settings(study, node).get("throttle")
            spec = f"0-{len(members) - 1}" + (f"%{throttle}" if throttle else "")
            cmd = [
                "sbatch",
                *sbatch_options(study, node, spec),
                *dependency,
                script,
                *launcher_options(study, node),
                "--tasks-file",
                tasks,
            ]
            array_id = sbatch(cmd, dry_run, f"<{node.group}>", env)
            for i, member in enumerate(members):
                jobs[member.name] = f"{array_id}_{i}"
        else:
            cmd = [
                "sbatch",
                *sbatch_options(study, node),
                *dependency,
                script,
                *launcher_options(study, node),
                "--",
                *(node.args if dry_run else snap.args(node)),
            ]
            jobs[node.name] = sbatch(cmd, dry_run, f"<{node.name}>", env)
        if not dry_run:
            for member in members:
                attempts = ledger.get(member.name).get("submissions", 0) + 1
                ledger.record(
                    member.name,
                    executor="slurm",
                    job=jobs[member.name],
                    state="submitted",
                    submissions=attempts,
                    output=member.output,
                    snapshot=root,
                    log=log_stem(study, member, len(members) > 1)
                    + (f"-{jobs[member.name]}.out"),
                )
    if dry_run:
        print("dry run: nothing submitted")
    return jobs


def _done(nodes: List[Node], name: str) -> bool:
    return next(n for n in nodes if n.name == name).done()
