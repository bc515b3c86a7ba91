"""``megatron-meta train``: pretrain a model on preprocessed shards.

One process per GPU (or per CPU rank), launched with torchrun::

    torchrun --nproc-per-node 4 -m megatron_meta.cli train --config examples/paper_1b.yaml \\
        --data-manifest data/now.manifest.json --variant full --save runs/global-full

    # on the CPU, two ranks, tensor parallel
    torchrun --nproc-per-node 2 tools/pretrain.py --config examples/tiny_cpu.yaml \\
        --tensor-model-parallel-size 2 --data-manifest ... --save runs/tiny

A YAML recipe (``--config``) sets any field; flags (Megatron-LM names) override it; the resolved
configuration is written to ``SAVE/config.yaml``. ``--load`` resumes model, optimizer, schedule,
data position and RNG; with ``--save X --load X`` a requeued job continues where it stopped.

SIGTERM or SIGUSR1 makes every rank finish its iteration, save a checkpoint and exit. torchrun
forwards SIGTERM; for Slurm's ``--signal=USR1@...`` warning add ``--signals-to-handle
SIGTERM,SIGINT,SIGUSR1`` to torchrun (and ``--shutdown-timeout`` long enough for one iteration
plus a save): torchrun's default lets SIGUSR1 kill it and its workers.
"""

from __future__ import annotations

from typing import List

from megatron_meta.training.config import parse_args
from megatron_meta.training.preflight import preflight
from megatron_meta.training.stopping import StopRequest


def main(argv: List[str]) -> int:
    # First of all: a stop signal during start-up (Slurm signals every process of the job) is
    # remembered and honoured after the first iteration, instead of killing the process.
    stop = StopRequest()
    config = parse_args(argv)
    manifest = preflight(config)  # fail fast, before megatron-core is imported

    from megatron_meta.training.trainer import train

    train(config, manifest, stop)  # logs where and why it stopped
    return 0


if __name__ == "__main__":
    import sys

    from megatron_meta.cli import run_guarded, setup_logging

    setup_logging()
    sys.exit(run_guarded(main, sys.argv[1:], "megatron-meta train"))
