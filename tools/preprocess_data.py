#!/usr/bin/env python
"""Megatron-LM's preprocessing entry point, with metadata: same as ``megatron-meta preprocess``.

See ``megatron_meta/preprocess/cli.py`` for the flags and an example.
"""

import sys

from megatron_meta.cli import run_guarded, setup_logging
from megatron_meta.preprocess.cli import main

if __name__ == "__main__":  # worker processes must not re-run the command
    setup_logging()
    sys.exit(run_guarded(main, sys.argv[1:], "preprocess_data.py"))
