"""Flags of ``evaluate counterfactual`` and ``evaluate context-length`` (perplexity studies).

Both read the held-out test documents of a preprocessing manifest and score a model given as a
Hugging Face folder or a megatron-meta checkpoint (converted to Hugging Face on the way); the
model's own tokenizer formats the text. Each writes RESULTS.json, RESULTS.md and RESULTS.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Callable, Dict, List

from megatron_meta.errors import ConfigError


def _lengths(spec: str) -> List[int]:
    try:
        values = sorted({int(x) for x in spec.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of token counts, got {spec!r}")
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"token counts must be positive, got {spec!r}")
    return values


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="Hugging Face folder or megatron-meta checkpoint")
    p.add_argument("--data-manifest", required=True, metavar="M",
                   help="preprocessing manifest with held-out test JSONL")
    p.add_argument("--variant", default="full", help="metadata variant of the text (default: full)")
    p.add_argument("--max-documents", type=int, default=1000, help="documents per region")
    p.add_argument("--micro-batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--bootstrap-samples", type=int, default=1000)
    p.add_argument("--label", help="model name in the results (default: the folder's name)")
    p.add_argument("--output", required=True, metavar="RESULTS.json")


def add_study_parsers(sub) -> None:
    c = sub.add_parser("counterfactual", help="perplexity with own, other regions' and no metadata")
    _common(c)
    c.add_argument("--seq-length", type=int, default=1024, help="tokens kept per document")
    t = sub.add_parser("context-length", help="perplexity of the first N tokens, with/without metadata")
    _common(t)
    t.add_argument("--lengths", type=_lengths, default=[16, 64, 256, 1024],
                   help="comma list of N (default: 16,64,256,1024)")


def _load(args):
    from megatron_meta.evaluation.perplexity.hf_scoring import hf_codec, hf_score_fn
    from megatron_meta.evaluation.perplexity.evaluate import held_out_test_sets
    from megatron_meta.finetune.hf_load import load_causal_lm
    from megatron_meta.metadata.formatting import VARIANTS
    from megatron_meta.manifest import load_manifest

    if args.variant not in VARIANTS or args.variant == "none":
        raise ConfigError(f"--variant {args.variant!r}: choose a metadata variant: "
                          f"{', '.join(v for v in VARIANTS if v != 'none')}")
    for flag in ("max_documents", "micro_batch_size", "bootstrap_samples"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be at least 1")
    manifest = load_manifest(args.data_manifest)
    sets = held_out_test_sets(manifest)
    model, tokenizer, _ = load_causal_lm(args.model)
    label = args.label or os.path.basename(os.path.normpath(args.model))
    return (hf_score_fn(model, args.micro_batch_size), hf_codec(tokenizer), sets, label,
            manifest.url_form)


def _write(path: str, kind: str, args, results, text: str, plot) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"format": f"megatron-meta-{kind}", "args": {k: v for k, v in vars(args).items()
                                                                if k != "func"},
                   "results": [dataclasses.asdict(r) for r in results]}, f, indent=1)
    os.replace(path + ".tmp", path)
    prefix = os.path.splitext(path)[0]
    with open(prefix + ".md.tmp", "w", encoding="utf-8") as f:
        f.write(text + f"\n\n![chart]({os.path.basename(prefix)}.png)\n")
    os.replace(prefix + ".md.tmp", prefix + ".md")
    plot(prefix + ".png")
    print(text)
    print(f"\nwrote {path}, {prefix}.md and {prefix}.png")


def _counterfactual(args) -> int:
    from megatron_meta.evaluation.perplexity.counterfactual import counterfactual, format_counterfactual
    from megatron_meta.evaluation.perplexity.counterfactual_plot import plot_counterfactual

    score, codec, sets, label, url_form = _load(args)
    results = counterfactual(score, codec, sets, label, args.max_documents, args.seq_length,
                             args.seed, args.variant, url_form, args.bootstrap_samples)
    _write(args.output, "counterfactual", args, results, format_counterfactual(results),
           lambda png: plot_counterfactual(results, png))
    return 0


def _context_length(args) -> int:
    from megatron_meta.evaluation.perplexity.context_length import (
        context_length_study, format_context_length, plot_context_length,
    )

    score, codec, sets, label, url_form = _load(args)
    results = context_length_study(score, codec, sets, label, args.lengths, args.variant,
                                   args.max_documents, args.seed, url_form, args.bootstrap_samples)
    _write(args.output, "context-length", args, results, format_context_length(results),
           lambda png: plot_context_length(results, png))
    return 0


STUDY_COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "counterfactual": _counterfactual,
    "context-length": _context_length,
}
