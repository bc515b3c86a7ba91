"""``study logs NODE`` and ``study cancel [NODE...]`` on a submitted study.

Logs: the node's Slurm output (``logs/slurm/{node}-{job}.out``, array tasks by ``ARRAY_TASK``)
and, for a training run, its per-node logs of the newest attempt (``{save}/logs/{job}_{n}/``).
Cancel: ``scancel`` of the nodes' jobs (array tasks one by one), recorded in the ledger; a
cancelled training job is never requeued (the launcher tells a cancel from a preemption).
"""

from __future__ import annotations

import glob
import os
import subprocess
from typing import List, Optional

from megatron_meta.errors import ConfigError, MegatronMetaError
from megatron_meta.study.graph import Node
from megatron_meta.study.ledger import Ledger
from megatron_meta.study.spec import Study


def _node(nodes: List[Node], name: str) -> Node:
    for node in nodes:
        if node.name == name:
            return node
    raise ConfigError(f"no node {name!r} in this study; nodes: {', '.join(n.name for n in nodes)}")


def _tail(path: str, lines: int) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read().splitlines()
    return "\n".join(text[-lines:]) if lines else "\n".join(text)


def node_logs(study: Study, nodes: List[Node], name: str, lines: int = 40) -> str:
    """The node's log files with their last ``lines`` lines (0: all)."""
    node = _node(nodes, name)
    entry = Ledger(study.output_dir).get(name)
    job = entry.get("job")
    if not job:
        raise ConfigError(f"{name} was never submitted (`study submit` first)")
    paths = [entry["log"]] if entry.get("log") else []
    if node.kind == "train":
        attempts = sorted(
            glob.glob(os.path.join(node.output, "logs", f"{job}_*")),
            key=lambda p: int(p.rsplit("_", 1)[1]) if p.rsplit("_", 1)[1].isdigit() else -1,
        )
        if attempts:
            paths += sorted(glob.glob(os.path.join(attempts[-1], "node*.log")))
    parts = [f"{name}: job {job}"]
    for path in paths:
        if os.path.isfile(path):
            parts.append(f"==> {path} <==\n{_tail(path, lines)}")
        else:
            parts.append(f"==> {path} <== (not written yet: the job has not started)")
    return "\n\n".join(parts)


def cancel(study: Study, nodes: List[Node], names: Optional[List[str]] = None) -> List[str]:
    """Cancel the named nodes' jobs (default: every submitted node not done); returns them."""
    ledger = Ledger(study.output_dir)
    chosen = [_node(nodes, n) for n in names] if names else nodes
    cancelled = []
    for node in chosen:
        entry = ledger.get(node.name)
        job = entry.get("job")
        if not job or entry.get("executor") != "slurm" or (not names and node.done()):
            continue
        out = subprocess.run(["scancel", job], capture_output=True, text=True)
        if out.returncode:
            raise MegatronMetaError(f"scancel {job} ({node.name}) failed: {out.stderr.strip()}")
        ledger.record(node.name, state="cancelled")
        cancelled.append(f"{node.name} (job {job})")
    return cancelled
