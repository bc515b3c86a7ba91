#!/usr/bin/env python
"""Pretrain with megatron-core: ``torchrun --nproc-per-node N tools/pretrain.py --config ...``.

Same as ``megatron-meta train``; see ``megatron_meta/training/cli.py`` for examples.
"""

import sys

from megatron_meta.cli import run_guarded, setup_logging
from megatron_meta.training.cli import main

if __name__ == "__main__":  # dist_checkpointing starts a spawn-context Manager: keep this guard
    setup_logging()
    sys.exit(run_guarded(main, sys.argv[1:], "pretrain.py"))
