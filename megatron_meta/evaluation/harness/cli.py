"""Flags of ``evaluate lm-eval-task``: the benchmark as an lm-evaluation-harness task."""

from __future__ import annotations

import argparse
import os
from typing import Callable, Dict


def add_harness_parsers(sub) -> None:
    t = sub.add_parser("lm-eval-task", help="write an lm-evaluation-harness task for the benchmark")
    t.add_argument("--benchmark", required=True, metavar="FILE", help="benchmark JSONL")
    t.add_argument("--output", required=True, metavar="DIR", help="task folder (for --include_path)")
    t.add_argument("--name", default="metacul_mcq", help="task name prefix (default: metacul_mcq)")
    t.add_argument("--base-url", default=None, help="made-up URL of the with-metadata task "
                   "(default: the first of the documented list)")


def _lm_eval_task(args: argparse.Namespace) -> int:
    from megatron_meta.evaluation.harness.task import write_harness_tasks

    names = write_harness_tasks(args.benchmark, args.output, args.name, args.base_url)
    print(f"wrote tasks {', '.join(names)} in {args.output}; run e.g.\n"
          f"  HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 lm_eval --model hf --model_args "
          f"pretrained=MODEL_DIR,dtype=float32 --include_path {os.path.abspath(args.output)} "
          f"--tasks {','.join(names)} --device cpu")
    return 0


HARNESS_COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "lm-eval-task": _lm_eval_task,
}
