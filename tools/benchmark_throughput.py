#!/usr/bin/env python
"""Training throughput (tokens/s, TFLOP/s, MFU) of a preset; on the CPU against transformers.

``python tools/benchmark_throughput.py --model smollm2-135m --seq-length 512 --threads 2``;
see ``megatron_meta/training/benchmark.py``.
"""

import sys

from megatron_meta.cli import run_guarded, setup_logging
from megatron_meta.training.benchmark import main

if __name__ == "__main__":
    setup_logging()
    sys.exit(run_guarded(main, sys.argv[1:], "benchmark_throughput.py"))
