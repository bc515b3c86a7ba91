"""``megatron-meta study plan|submit|status|logs|cancel|run|report STUDY.yaml``.

    megatron-meta study plan examples/study_paper.yaml            # the graph and its commands
    megatron-meta study submit examples/study_paper.yaml --dry-run
    megatron-meta study submit examples/study_paper.yaml          # Slurm, afterok chains
    megatron-meta study status examples/study_paper.yaml          # per node: state, attempts
    megatron-meta study logs examples/study_paper.yaml train/global-full   # its Slurm logs
    megatron-meta study cancel examples/study_paper.yaml [NODE ...]        # scancel (all: none named)
    megatron-meta study run examples/study_demo.yaml --executor local --nproc 2
    megatron-meta study report examples/study_demo.yaml

Running ``submit`` or ``run`` again skips what is done and redoes only what failed or is missing.
"""

from __future__ import annotations

import argparse
import shlex
from typing import List, Optional

from megatron_meta.errors import MegatronMetaError
from megatron_meta.study.graph import build_graph
from megatron_meta.study.spec import load_study


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="megatron-meta study",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="action", required=True)
    for name, help_ in (
        ("plan", "print the graph and the exact commands"),
        ("submit", "submit what is not done to Slurm"),
        ("status", "state of every node (done, pending, running, failed, ...)"),
        ("run", "run the graph on this machine"),
        ("report", "tables and charts from the study's outputs"),
        ("logs", "a submitted node's Slurm and per-node logs"),
        ("cancel", "cancel submitted nodes' jobs (all when none is named)"),
    ):
        s = sub.add_parser(name, help=help_)
        s.add_argument("study", metavar="STUDY.yaml")
        if name == "logs":
            s.add_argument("node", help="a node name, as `study status` prints it")
            s.add_argument("--lines", type=int, default=40, help="last lines of each log (0: all)")
        if name == "cancel":
            s.add_argument("nodes", nargs="*", metavar="NODE", help="nodes to cancel")
        s.add_argument("--output-dir", help="override the study's output_dir")
        if name == "submit":
            s.add_argument("--dry-run", action="store_true", help="print the sbatch commands only")
        if name == "run":
            s.add_argument(
                "--executor",
                choices=("local", "slurm"),
                default="local",
                help="local: here, one node after the other; slurm: same as submit",
            )
            s.add_argument("--nproc", type=int, default=1, help="training processes (torchrun)")
            s.add_argument("--verbose", action="store_true", help="show every line of every stage")
    return p


def main(argv: List[str]) -> int:
    args = build_parser().parse_args(argv)
    study = load_study(args.study, args.output_dir)
    nodes = build_graph(study)
    if args.action in ("plan", "run", "submit"):
        from megatron_meta.study.preflight import check_study

        to_slurm = args.action == "submit" or getattr(args, "executor", "local") == "slurm"
        check_study(study, nodes, _world_size(study, args), slurm=to_slurm)
    if args.action in ("plan", "run"):
        print(
            f"study {study.name}: {len(study.runs)} pretraining runs, {len(nodes)} nodes; "
            f"outputs in {study.output_dir}; protocol {study.protocol}"
        )
        if any(n.kind == "mcq" for n in nodes):
            from megatron_meta.study.kinds import mcq_benchmark

            path, source = mcq_benchmark(study)
            print(f"MCQ benchmark: {path} ({source})")
    if args.action == "plan":
        for node in nodes:
            after = f"  (after {', '.join(node.deps)})" if node.deps else ""
            print(f"\n{node.name}{after}\n  $ megatron-meta {shlex.join(node.args)}")
        from megatron_meta.study.paper_tables import table_lines

        print("\n".join(table_lines(nodes)))
        return 0
    if args.action == "report":
        from megatron_meta.study.report import study_report

        print(study_report(study))
        return 0
    if args.action == "status":
        return status(study, nodes)
    if args.action == "logs":
        from megatron_meta.study.slurm_ops import node_logs

        print(node_logs(study, nodes, args.node, args.lines))
        return 0
    if args.action == "cancel":
        from megatron_meta.study.slurm_ops import cancel

        done = cancel(study, nodes, args.nodes)
        print("cancelled: " + (", ".join(done) if done else "nothing (no submitted job)"))
        return 0
    if args.action == "submit" or args.executor == "slurm":
        from megatron_meta.study.slurm import submit

        submit(study, nodes, dry_run=getattr(args, "dry_run", False))
        return 0
    from megatron_meta.study.local import run_local

    failed = run_local(study, nodes, nproc=args.nproc, verbose=args.verbose)
    if failed:
        raise MegatronMetaError(f"{failed} node(s) failed or could not run; see `study status`")
    return 0


def _world_size(study, args) -> Optional[int]:
    """Training processes the study will get (None: not known before submission)."""
    if args.action == "run" and args.executor == "local":
        return args.nproc
    slurm = study.slurm
    if slurm.get("gpus_per_node"):
        return int(slurm.get("nodes") or 1) * int(slurm["gpus_per_node"])
    return None


def status(study, nodes) -> int:
    from megatron_meta.study.ledger import Ledger

    ledger = Ledger(study.output_dir)
    live = None
    counts: dict = {}
    print(f"{'node':<40} {'state':<10} {'attempts':>8}  job")
    for node in nodes:
        entry = ledger.get(node.name)
        if entry.get("executor") == "slurm":
            from megatron_meta.study.slurm import live_jobs, node_state

            live = live_jobs() if live is None else live
            state, attempts = node_state(node, entry, live)
            if entry.get("state") != state:  # the ledger follows what Slurm says
                ledger.record(node.name, state=state)
        else:
            state = "done" if node.done() else entry.get("state", "missing")
            attempts = entry.get("attempts", 0)
        counts[state] = counts.get(state, 0) + 1
        print(f"{node.name:<40} {state:<10} {attempts:>8}  {entry.get('job', '-')}")
    print("\n" + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return 0
