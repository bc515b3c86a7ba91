#!/usr/bin/env python
"""Train a SentencePiece model on metadata-formatted documents.

Same as ``megatron-meta train-tokenizer``; see ``megatron_meta/tokenizer/train.py``.
"""

import sys

from megatron_meta.cli import run_guarded, setup_logging
from megatron_meta.tokenizer.train import main

if __name__ == "__main__":
    setup_logging()
    sys.exit(run_guarded(main, sys.argv[1:], "train_tokenizer.py"))
