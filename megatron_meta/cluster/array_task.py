"""The arguments one task of an ablation array adds to ``megatron-meta train``.

    python -m megatron_meta.cluster.array_task MODE --values A,B,C --task-id I --save-root R

prints NUL-separated arguments for ``slurm/*.sbatch`` to append. Modes:

* ``local``: train on region ``values[I]`` alone (``--exclude-regions`` every other one);
* ``leave-out``: train on every region but ``values[I]``;
* ``variant``: train on metadata variant ``values[I]`` (the field ablations).

Each task saves under ``R/{mode}-{value}`` (lowercase), so requeued tasks find their checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

MODES = ("local", "leave-out", "variant")


def task_args(mode: str, values: List[str], task_id: int, save_root: str) -> List[str]:
    if mode not in MODES:
        raise SystemExit(f"array_task: mode {mode!r}: choose from {', '.join(MODES)}")
    if not 0 <= task_id < len(values):
        raise SystemExit(
            f"array_task: task {task_id} but only {len(values)} values ({','.join(values)}); "
            f"submit with --array=0-{len(values) - 1}"
        )
    value = values[task_id]
    save = f"{save_root.rstrip('/')}/{mode}-{value.lower()}"
    if mode == "local":
        others = [v for v in values if v != value]
        return ["--exclude-regions", ",".join(others), "--save", save]
    if mode == "leave-out":
        return ["--exclude-regions", value, "--save", save]
    return ["--variant", value, "--save", save]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m megatron_meta.cluster.array_task")
    p.add_argument("mode", choices=MODES)
    p.add_argument("--values", required=True, help="comma list: regions or variants")
    p.add_argument("--task-id", type=int, required=True, help="SLURM_ARRAY_TASK_ID")
    p.add_argument("--save-root", required=True, help="folder holding one run per task")
    a = p.parse_args(argv)
    values = [v.strip() for v in a.values.split(",") if v.strip()]
    sys.stdout.write("\0".join(task_args(a.mode, values, a.task_id, a.save_root)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
