"""The local executor: the study's nodes one after the other on this machine.

Done nodes are skipped (their output exists, a training run says ``finished``), so running the
study again resumes it; a training run continues from its newest checkpoint. A failed node marks
its dependants as not run and the others go on.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import List

from megatron_meta.errors import MegatronMetaError
from megatron_meta.study.console import run_command
from megatron_meta.study.graph import Node, dependants
from megatron_meta.study.kinds import KINDS
from megatron_meta.study.ledger import Ledger
from megatron_meta.study.runs import Study


def local_command(node: Node, nproc: int) -> List[str]:
    """The node's command on this machine: torchrun standalone (:mod:`megatron_meta.launch`) for
    training."""
    if KINDS[node.kind].launcher == "torchrun":
        return [
            sys.executable,
            "-m",
            "megatron_meta.launch",  # torchrun, ending with the failed rank's message
            "--standalone",
            "--nproc-per-node",
            str(nproc),
            "-m",
            "megatron_meta.cli",
            *node.args,
        ]
    return [sys.executable, "-m", "megatron_meta.cli", *node.args]


def key_figure(node: Node) -> str:
    """The figure a person looks for first in a finished stage's output ('' when none)."""
    try:
        if node.kind == "train":
            with open(os.path.join(node.output, "metrics.jsonl"), encoding="utf-8") as f:
                rows = [json.loads(line) for line in f if line.strip()]
            loss = next((r["loss"] for r in reversed(rows) if "loss" in r), None)
            return f"loss {loss:.3f}" if loss is not None else ""
        if node.kind == "perplexity":
            from megatron_meta.evaluation.perplexity.evaluate import read_results

            ratios = [r.ratio_to_none for r in read_results(node.output)
                      if r.ratio_to_none is not None and r.variant != "none"]
            return f"ppl ratio with/without metadata {min(ratios):.3f}-{max(ratios):.3f}" if ratios else ""
        if node.kind == "mcq":
            from megatron_meta.evaluation.mcq.score import read_records

            by: dict = {}
            for r in read_records(node.output):
                by.setdefault(r.get("setting"), []).append(r["correct"])
            return ", ".join(f"acc {k} metadata {100 * sum(v) / len(v):.1f}%" for k, v in by.items())
        if node.kind == "benchmark":
            with open(node.output, encoding="utf-8") as f:
                return f"{sum(1 for line in f if line.strip())} questions"
    except (OSError, ValueError, KeyError, TypeError, MegatronMetaError):
        return ""
    return ""


def _report_summary(study: Study) -> None:
    """The report's path and its findings, in a few lines."""
    path = study.path_in("report", "study.md")
    if not os.path.exists(path):
        return
    print(f"report: {path}")
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    shown = [line for line in lines if line.startswith("- ")][:8]
    for line in shown:
        print("  " + (line if len(line) <= 150 else line[:147] + "..."))


def run_local(study: Study, nodes: List[Node], nproc: int = 1, verbose: bool = False) -> int:
    """Run what is not done; returns how many nodes failed or could not run."""
    ledger = Ledger(study.output_dir)
    blocked: dict = {}
    failures = 0
    started = time.perf_counter()
    threads = max(1, (os.cpu_count() or 1) // nproc)
    width = max(len(n.name) for n in nodes)
    for i, node in enumerate(nodes, 1):
        head = f"[{i:>{len(str(len(nodes)))}}/{len(nodes)}] {node.name:<{width}}"
        if node.done():
            print(f"{head}  done (already)", flush=True)
            ledger.record(node.name, executor="local", state="done", output=node.output)
            continue
        if node.name in blocked:
            print(f"{head}  not run: {blocked[node.name]} failed", flush=True)
            ledger.record(node.name, executor="local", state="blocked", output=node.output)
            continue
        attempts = ledger.get(node.name).get("attempts", 0) + 1
        ledger.record(
            node.name, executor="local", state="running", attempts=attempts, output=node.output
        )
        env = {"OMP_NUM_THREADS": str(threads)} if KINDS[node.kind].launcher == "torchrun" else None
        log = study.path_in("logs", node.name.replace("/", "_") + ".log")
        print(f"{head}  started  (log: {os.path.relpath(log)})", flush=True)
        t0 = time.perf_counter()
        try:
            run_command(local_command(node, nproc), env, log, verbose, node.name)
            if not node.done():
                raise MegatronMetaError(f"exited but is not done ({node.output})")
        except MegatronMetaError as e:
            print(f"{head}  FAILED after {time.perf_counter() - t0:.1f} s: {e}", flush=True)
            ledger.record(node.name, state="failed")
            failures += 1
            for name in dependants(nodes, node.name):
                blocked.setdefault(name, node.name)
            continue
        ledger.record(node.name, state="done")
        seconds = time.perf_counter() - t0
        figure = key_figure(node)
        print(f"{head}  done in {seconds:.1f} s" + (f"  {figure}" if figure else ""), flush=True)
    total = time.perf_counter() - started
    print(f"study {study.name}: {total / 60:.1f} min; outputs in {study.output_dir}", flush=True)
    _report_summary(study)
    return failures + len(blocked)
