#!/usr/bin/env python
"""Megatron-LM's `tools/merge_datasets.py` name for ``megatron-meta merge``.

See ``megatron_meta/preprocess/merge.py`` for the flags and an example.
"""

import sys

from megatron_meta.cli import run_guarded, setup_logging
from megatron_meta.preprocess.merge import main

if __name__ == "__main__":
    setup_logging()
    sys.exit(run_guarded(main, sys.argv[1:], "merge_datasets.py"))
