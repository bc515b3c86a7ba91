"""The local executor: the study's nodes one after the other on this machine.

Done nodes are skipped (their output exists, a training run says ``finished``), so running the
study again resumes it; a training run continues from its newest checkpoint. A failed node marks
its dependants as not run and the others go on.
"""

from __future__ import annotations

import os
import sys
import time
from typing import List

from megatron_meta.errors import MegatronMetaError
from megatron_meta.stages import banner, run_command
from megatron_meta.study.graph import Node, dependants
from megatron_meta.study.kinds import KINDS
from megatron_meta.study.ledger import Ledger
from megatron_meta.study.runs import Study


def local_command(node: Node, nproc: int) -> List[str]:
    """The node's command on this machine: torchrun standalone for training."""
    if KINDS[node.kind].launcher == "torchrun":
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(nproc),
            "-m",
            "megatron_meta.cli",
            *node.args,
        ]
    return [sys.executable, "-m", "megatron_meta.cli", *node.args]


def run_local(study: Study, nodes: List[Node], nproc: int = 1, verbose: bool = False) -> int:
    """Run what is not done; returns how many nodes failed or could not run."""
    ledger = Ledger(study.output_dir)
    blocked: dict = {}
    failures = 0
    started = time.perf_counter()
    timings = []
    threads = max(1, (os.cpu_count() or 1) // nproc)
    for i, node in enumerate(nodes, 1):
        banner(i, len(nodes), node.name, " ".join(node.args[:2]))
        if node.done():
            print(f"skipped: done ({node.output})", flush=True)
            ledger.record(node.name, executor="local", state="done", output=node.output)
            continue
        if node.name in blocked:
            print(f"not run: {blocked[node.name]} failed", flush=True)
            ledger.record(node.name, executor="local", state="blocked", output=node.output)
            continue
        attempts = ledger.get(node.name).get("attempts", 0) + 1
        ledger.record(
            node.name, executor="local", state="running", attempts=attempts, output=node.output
        )
        env = {"OMP_NUM_THREADS": str(threads)} if KINDS[node.kind].launcher == "torchrun" else None
        log = study.path_in("logs", node.name.replace("/", "_") + ".log")
        t0 = time.perf_counter()
        try:
            run_command(local_command(node, nproc), env, log, verbose)
            if not node.done():
                raise MegatronMetaError(f"{node.name} exited but is not done ({node.output})")
        except MegatronMetaError as e:
            print(f"{node.name} failed: {e}", flush=True)
            ledger.record(node.name, state="failed")
            failures += 1
            for name in dependants(nodes, node.name):
                blocked.setdefault(name, node.name)
            continue
        ledger.record(node.name, state="done")
        timings.append((node.name, time.perf_counter() - t0))
    for name, seconds in timings:
        print(f"  {name:<32} {seconds:7.1f} s")
    total = time.perf_counter() - started
    print(f"study {study.name}: {total / 60:.1f} min; outputs in {study.output_dir}", flush=True)
    return failures + len(blocked)
