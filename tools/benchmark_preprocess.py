#!/usr/bin/env python
"""Preprocessing benchmark: ours vs the tokenizer library's own threaded bound and the tokenizer alone.

``python tools/benchmark_preprocess.py [--quick]``; see ``megatron_meta/preprocess/benchmark.py``.
"""

import sys

from megatron_meta.cli import run_guarded, setup_logging
from megatron_meta.preprocess.benchmark import main

if __name__ == "__main__":  # worker processes must not re-run the benchmark
    setup_logging()
    sys.exit(run_guarded(main, sys.argv[1:], "benchmark_preprocess.py"))
