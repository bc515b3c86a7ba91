#!/usr/bin/env python
"""Our MCQ log-likelihood scoring against ``lm_eval`` (accuracy, agreement, time ratio).

``python tools/benchmark_mcq_harness.py --model DIR --benchmark qa.jsonl [--limit N]``;
see ``megatron_meta/evaluation/harness/benchmark.py``.
"""

import sys

from megatron_meta.cli import run_guarded, setup_logging
from megatron_meta.evaluation.harness.benchmark import main

if __name__ == "__main__":
    setup_logging()
    sys.exit(run_guarded(main, sys.argv[1:], "benchmark_mcq_harness.py"))
