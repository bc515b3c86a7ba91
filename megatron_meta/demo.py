"""``megatron-meta demo`` (``make demo``): the demo study, run stage by stage on this machine.

    megatron-meta demo [--output-dir runs/study-demo] [--nproc 2] [--benchmark FILE] [--verbose]

is ``megatron-meta study run examples/study_demo.yaml --executor local``: the embedded news
corpus -> tokenizer -> shards -> four tiny models (global with and without metadata, leave Europe
out, URL-only ablation) -> conversion to Hugging Face -> perplexity, counterfactual metadata,
a short LoRA instruction tuning and the MCQ benchmark -> the study report. Stages that are done
are skipped, so running it again resumes where it stopped.

The MCQ stage scores the demo's own set, built from the held-out news headlines
(``evaluate make-mcq``); ``--benchmark FILE`` (or ``$MEGATRON_META_BENCHMARK``) scores the paper's
``qa_metacul.jsonl`` instead. The run says which it used.
"""

from __future__ import annotations

import argparse
import os
from typing import List

from megatron_meta.errors import ConfigError

STUDY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                     "study_demo.yaml")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="megatron-meta demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="runs/study-demo", help="where every stage writes")
    parser.add_argument("--nproc", type=int, default=2, help="training processes (torchrun)")
    parser.add_argument("--benchmark", metavar="FILE",
                        help="MCQ benchmark JSONL, e.g. the paper's qa_metacul.jsonl (default: the "
                        "demo's own set from held-out news; also $MEGATRON_META_BENCHMARK)")
    parser.add_argument("--verbose", action="store_true", help="show every line of every stage")
    return parser


def main(argv: List[str]) -> int:
    args = build_parser().parse_args(argv)
    if not os.path.isfile(STUDY):
        raise ConfigError(f"{STUDY} not found: the demo needs a source checkout of megatron-meta "
                          "(examples/ is not installed); run it from the repository")
    from megatron_meta.study import cli as study_cli
    from megatron_meta.study.kinds import BENCHMARK_ENV

    if args.benchmark:  # read where the study's mcq stage looks for the paper's file
        os.environ[BENCHMARK_ENV] = os.path.abspath(args.benchmark)

    command = ["run", STUDY, "--executor", "local", "--nproc", str(args.nproc),
               "--output-dir", args.output_dir] + (["--verbose"] if args.verbose else [])
    return study_cli.main(command)


if __name__ == "__main__":
    import sys

    from megatron_meta.cli import run_guarded, setup_logging

    setup_logging()
    sys.exit(run_guarded(main, sys.argv[1:], "megatron-meta demo"))
