"""Flags of ``evaluate mcq`` (kept apart from the perplexity and harness CLIs)."""

from __future__ import annotations

import argparse
import logging
import math
import os
from typing import Callable, Dict

from megatron_meta.errors import ConfigError
from megatron_meta.protocol import add_protocol_argument

logger = logging.getLogger(__name__)


def _settings(spec: str):
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in ("with", "without")]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"give with, without or with,without; got {spec!r}")
    return list(dict.fromkeys(names))


def add_mcq_parsers(sub) -> None:
    m = sub.add_parser("mcq", help="accuracy on the localized multiple-choice benchmark")
    m.add_argument("--model", nargs="+", required=True, metavar="M",
                   help="Hugging Face folders or megatron-meta checkpoints (several at once)")
    m.add_argument("--label", nargs="+", help="names of the models in the results (default: folder names)")
    m.add_argument("--benchmark", required=True, metavar="FILE", help="benchmark JSONL")
    m.add_argument("--scoring", choices=("loglik", "generate"), default="loglik")
    m.add_argument("--metadata", type=_settings, nargs="+", default=[["with", "without"]],
                   help="with, without or with,without (default: both); one per --model for the "
                   "paper's grid, e.g. 'with,without with without' (baseline, metadata model, "
                   "no-metadata model)")
    m.add_argument("--repeats", type=int, help="made-up base URLs (and sampling seeds) per setting "
                   "(default: 10 for generate, 1 for loglik)")
    m.add_argument("--max-new-tokens", type=int, default=128)
    m.add_argument("--temperature", type=float, default=0.6, help="0 = greedy (default: 0.6)")
    m.add_argument("--top-p", type=float, default=0.9)
    m.add_argument("--batch-size", type=int, help="prompts generated together (default: 16; 4 "
                   "under --protocol paper)")
    m.add_argument("--chat-template", choices=("auto", "on", "off"), default="auto",
                   help="generation prompts through the tokenizer's chat template (default: auto)")
    m.add_argument("--limit", type=int, help="only the first N questions")
    m.add_argument("--sample", type=int, help="a seeded random sample of N questions (all regions), "
                   "for a quick estimate of the slow generation protocol")
    m.add_argument("--shuffle-options", action="store_true",
                   help="seeded random option order per question and repeat (the released file "
                   "has the right answer first in 780 of 800 questions)")
    m.add_argument("--seed", type=int, default=42)
    add_protocol_argument(m, "the authors' system message, Llama-3 chat template, pad = EOS, one "
                          "seed for every run, batch 4, their answer parser and aggregation")
    m.add_argument("--output", required=True, metavar="RESULTS.json",
                   help="per-question records; RESULTS.md and RESULTS.png are written beside it")

    b = sub.add_parser("make-mcq", help="a localized MCQ set (benchmark format) from held-out news")
    b.add_argument("--data-manifest", required=True, metavar="MANIFEST",
                   help="preprocess's manifest: its held-out test documents become questions")
    b.add_argument("--output", required=True, metavar="FILE", help="benchmark JSONL to write")
    b.add_argument("--max-questions", type=int, help="a seeded sample of N (default: every headline)")
    b.add_argument("--seed", type=int, default=42, help="distractors, option order, sample")


def _mcq(args: argparse.Namespace) -> int:
    from megatron_meta.evaluation.mcq.score import McqConfig, score_model, write_records
    from megatron_meta.evaluation.mcq.data import read_benchmark
    from megatron_meta.evaluation.mcq.report import write_mcq_report

    if len(args.metadata) not in (1, len(args.model)):
        raise ConfigError(f"--metadata: {len(args.metadata)} settings for {len(args.model)} --model "
                          "paths; give one for all or one per model")
    if args.label and len(args.label) != len(args.model):
        raise ConfigError(f"--label: {len(args.label)} names for {len(args.model)} --model paths")
    for flag, value in (("--repeats", args.repeats), ("--limit", args.limit), ("--sample", args.sample),
                        ("--batch-size", args.batch_size), ("--max-new-tokens", args.max_new_tokens)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} {value}: must be at least 1")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise ConfigError(f"--temperature {args.temperature}: must be 0 (greedy) or a positive number")
    if not (0 < args.top_p <= 1):
        raise ConfigError(f"--top-p {args.top_p}: must be in (0, 1]")
    config = McqConfig(
        models=args.model, benchmark=args.benchmark, scoring=args.scoring, settings=args.metadata[0],
        model_settings=args.metadata if len(args.metadata) > 1 else None, protocol=args.protocol,
        repeats=args.repeats, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        top_p=args.top_p, batch_size=args.batch_size, limit=args.limit, seed=args.seed,
        chat_template=args.chat_template, shuffle_options=args.shuffle_options,
    )
    questions = select_questions(read_benchmark(args.benchmark), args.limit, args.sample, args.seed)
    first = sum(q.answer == 0 for q in questions)
    if not args.shuffle_options and first > 0.5 * len(questions):
        logger.warning("the right answer is option A in %d of %d questions: letter preferences "
                       "inflate accuracy; --shuffle-options shows the options in random order",
                       first, len(questions))
    records = []
    for i, path in enumerate(args.model):
        settings = config.model_settings[i] if config.model_settings else None
        records += score_model(path, questions, config, args.label[i] if args.label else None, settings)
    write_records(args.output, records, config)
    prefix = os.path.splitext(args.output)[0]
    print(write_mcq_report(records, prefix, f"{os.path.basename(args.benchmark)}: {args.scoring}"))
    print(f"\nwrote {args.output}, {prefix}.md and {prefix}.png")
    return 0


def select_questions(questions, limit=None, sample=None, seed=42):
    """The first ``limit`` questions, then a seeded sample of ``sample`` of them (in file order)."""
    import random

    questions = questions[:limit]
    if sample is not None and sample < len(questions):
        keep = sorted(random.Random(seed).sample(range(len(questions)), sample))
        questions = [questions[i] for i in keep]
    return questions


def _make_mcq(args: argparse.Namespace) -> int:
    from megatron_meta.evaluation.mcq.news import write_news_mcq

    if args.max_questions is not None and args.max_questions < 1:
        raise ConfigError(f"--max-questions {args.max_questions}: must be at least 1")
    n = write_news_mcq(args.data_manifest, args.output, args.max_questions, args.seed)
    print(f"wrote {n} questions to {args.output}")
    return 0


MCQ_COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "mcq": _mcq,
    "make-mcq": _make_mcq,
}
