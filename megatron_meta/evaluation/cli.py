"""``megatron-meta evaluate``: perplexity (per region, counterfactual, by context length),
the MCQ benchmark and its harness task, reports.

    megatron-meta evaluate perplexity --load runs/demo/models/full \\
        --data-manifest runs/demo/data/news.manifest.json --variants full,none \\
        --max-documents 1000 --seq-length 1024 --output results/full.json [--label full]
    megatron-meta evaluate report results/full.json results/none.json --output-prefix results/ppl
    megatron-meta evaluate mcq --model DIR [DIR ...] --benchmark qa.jsonl --scoring loglik \\
        --metadata with,without --output results/mcq.json
    megatron-meta evaluate lm-eval-task --benchmark qa.jsonl --output tasks/
    megatron-meta evaluate counterfactual --model M --data-manifest M.json --output cf.json
    megatron-meta evaluate context-length --model M --data-manifest M.json --lengths 16,64,256,1024 \\
        --output ctx.json

``perplexity`` scores held-out test documents of every region of the manifest in each variant
(the model's training variant is "with metadata", ``none`` is "without"), counting the loss
from the ``TITLE:`` token on; ``report`` turns one or several results files into a markdown
table (``P.md``) and a bar chart (``P.png``).
"""

from __future__ import annotations

import argparse
import logging
from typing import List

from megatron_meta.errors import ConfigError
from megatron_meta.evaluation.harness.cli import HARNESS_COMMANDS, add_harness_parsers
from megatron_meta.evaluation.mcq.cli import MCQ_COMMANDS, add_mcq_parsers
from megatron_meta.evaluation.perplexity.studies_cli import STUDY_COMMANDS, add_study_parsers
from megatron_meta.metadata.formatting import parse_variants
from megatron_meta.protocol import add_protocol_argument

logger = logging.getLogger(__name__)


def _positive(value: str) -> int:
    n = int(value)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="megatron-meta evaluate", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{perplexity,report,mcq,lm-eval-task,counterfactual,context-length}")

    p = sub.add_parser("perplexity", help="per-region perplexity of a checkpoint on held-out docs")
    p.add_argument("--load", required=True, metavar="CKPT", help="checkpoint folder (--save of train)")
    p.add_argument("--data-manifest", required=True, metavar="M",
                   help="preprocessing manifest with held-out test JSONL and the tokenizer")
    p.add_argument("--variants", default="full,none",
                   help="test variants, comma list (default: full,none = with and without metadata)")
    p.add_argument("--max-documents", type=_positive, default=1000,
                   help="documents sampled per region (default: 1000, the paper's)")
    p.add_argument("--seq-length", type=_positive, default=1024,
                   help="tokens kept per document (default: 1024, the paper's)")
    p.add_argument("--micro-batch-size", type=_positive, default=8, help="documents per forward")
    p.add_argument("--seed", type=int, default=42, help="sample and bootstrap seed (default: 42)")
    p.add_argument("--bootstrap-samples", type=_positive, default=1000,
                   help="bootstrap resamples for the 95%% interval (default: 1000)")
    p.add_argument("--label", help="model name in the results (default: the checkpoint folder's name)")
    p.add_argument("--output", required=True, metavar="RESULTS.json", help="where to write results")
    add_protocol_argument(p, "BOS + text cut to --seq-length as a whole, loss from the token after "
                          "TITLE, their sample and bootstrap, All and leave-one-out test sets")

    r = sub.add_parser("report", help="table (P.md) and chart (P.png) from results files")
    r.add_argument("results", nargs="+", metavar="RESULTS.json")
    r.add_argument("--output-prefix", required=True, metavar="P", help="writes P.md and P.png")
    r.add_argument("--title", default="", help="chart and document title")
    add_mcq_parsers(sub)
    add_harness_parsers(sub)
    add_study_parsers(sub)
    return parser


def _perplexity(args: argparse.Namespace) -> int:
    from megatron_meta.evaluation.perplexity.evaluate import (
        PerplexityConfig, evaluate_checkpoint, write_results,
    )

    config = PerplexityConfig(
        load=args.load,
        data_manifest=args.data_manifest,
        variants=parse_variants(args.variants),
        max_documents=args.max_documents,
        seq_length=args.seq_length,
        seed=args.seed,
        bootstrap_samples=args.bootstrap_samples,
        micro_batch_size=args.micro_batch_size,
        label=args.label,
        protocol=args.protocol,
    )
    results = evaluate_checkpoint(config)
    write_results(args.output, results, config)
    logger.info("wrote %d results to %s", len(results), args.output)
    return 0


def _report(args: argparse.Namespace) -> int:
    from megatron_meta.evaluation.perplexity.evaluate import read_results
    from megatron_meta.evaluation.perplexity.report import write_report

    results = []
    for path in args.results:
        results.extend(read_results(path))
    if not results:
        raise ConfigError(f"{', '.join(args.results)}: no results in these files")
    print(write_report(results, args.output_prefix, args.title))
    print(f"\nwrote {args.output_prefix}.md and {args.output_prefix}.png")
    if len({r.model for r in results}) > 1:
        from megatron_meta.evaluation.perplexity.matrix import write_matrix

        print("\n" + write_matrix(results, args.output_prefix, args.title))
        print(f"\nwrote {args.output_prefix}.matrix.md and {args.output_prefix}.matrix.png")
    return 0


def main(argv: List[str]) -> int:
    args = build_parser().parse_args(argv)
    check_outputs(args)  # before any scoring: an output that cannot be written fails now
    if args.command == "perplexity":
        return _perplexity(args)
    if args.command in MCQ_COMMANDS:
        return MCQ_COMMANDS[args.command](args)
    if args.command in HARNESS_COMMANDS:
        return HARNESS_COMMANDS[args.command](args)
    if args.command in STUDY_COMMANDS:
        return STUDY_COMMANDS[args.command](args)
    return _report(args)


def check_outputs(args: argparse.Namespace) -> None:
    from megatron_meta.outputs import check_output

    inputs = []
    for name in ("load", "model", "benchmark", "data_manifest", "results"):
        value = getattr(args, name, None)
        inputs += value if isinstance(value, list) else [value]
    if getattr(args, "output", None):
        kind = "any" if args.command == "lm-eval-task" else "file"
        check_output(args.output, "--output", kind=kind, inputs=inputs)
    if getattr(args, "output_prefix", None):
        check_output(args.output_prefix, "--output-prefix", kind="prefix", inputs=inputs)


if __name__ == "__main__":
    import sys

    from megatron_meta.cli import run_guarded, setup_logging

    setup_logging()
    sys.exit(run_guarded(main, sys.argv[1:], "megatron-meta evaluate"))
