#!/usr/bin/env python
"""Convert checkpoints to and from Hugging Face: ``python tools/convert_checkpoint.py to-hf
--load CKPT --output DIR`` or ``from-hf --hf DIR --save CKPT``.

Same as ``megatron-meta convert``; see ``megatron_meta/convert/cli.py``.
"""

import sys

from megatron_meta.cli import run_guarded, setup_logging
from megatron_meta.convert.cli import main

if __name__ == "__main__":  # dist_checkpointing starts a spawn-context Manager: keep this guard
    setup_logging()
    sys.exit(run_guarded(main, sys.argv[1:], "convert_checkpoint.py"))
