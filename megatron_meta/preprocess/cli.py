"""``megatron-meta preprocess`` (also ``tools/preprocess_data.py``): metadata-injected shards.

Takes Megatron-LM's ``tools/preprocess_data.py`` flags and writes, in one pass, one shard set per
metadata variant (and per region with ``--split-by``), a metadata-token sidecar per shard,
held-out JSONL and ``{output-prefix}.manifest.json``. Example::

    megatron-meta preprocess --input news-articles --output-prefix data/news \\
        --tokenizer-type SentencePieceTokenizer --tokenizer-model tok.model \\
        --metadata-variants full,none --split-by continent --holdout-test 100 \\
        --append-eod --workers 2

``--split-sentences`` writes one sequence per sentence (shards named ``..._text_sentence``) as
Megatron-LM does; the metadata block and title go with the first sentence. megatron-core's
GPTDataset treats every sequence as a document, so sentence shards suit sentence-level consumers;
for GPT pretraining keep the default (one sequence per document, metadata and text together).
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
from typing import List

# Before numpy is imported (below): its OpenBLAS starts (cores - 1) idle threads at import, and a
# multi-threaded process starts its workers by forkserver (fresh interpreters, their CPU not
# counted as this run's) instead of fork (see workers.py). Preprocessing does no BLAS work.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from megatron_meta.errors import ConfigError  # noqa: E402
from megatron_meta.metadata.formatting import URL_FORMS, VARIANTS, parse_variants  # noqa: E402
from megatron_meta.outputs import check_output, disk_full_guard  # noqa: E402
from megatron_meta.preprocess.holdout import HoldoutConfig  # noqa: E402
from megatron_meta.preprocess.runner import SPLIT_BY, PreprocessConfig, run_preprocess  # noqa: E402
from megatron_meta.tokenizer.load import TOKENIZER_TYPES  # noqa: E402

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    from megatron_meta.corpora.registry import add_corpus_arguments

    parser = argparse.ArgumentParser(
        prog="megatron-meta preprocess",
        description="Tokenize a corpus into megatron-core .bin/.idx shards, one set per metadata "
        "variant, with metadata-token sidecars, held-out JSONL and a manifest.",
    )
    add_corpus_arguments(parser)
    g = parser.add_argument_group("output (Megatron-LM flags)")
    g.add_argument("--output-prefix", required=True, help="path prefix of every output file")
    g.add_argument("--tokenizer-type", required=True, choices=sorted(TOKENIZER_TYPES))
    g.add_argument("--tokenizer-model", required=True, help="model file or directory")
    g.add_argument(
        "--workers", type=int, default=1,
        help="processes that read, encode and write pieces of the input (0: all in the main process)",
    )
    g.add_argument(
        "--partitions",
        type=int,
        default=1,
        help="cut the corpus into N parts, one run each (e.g. a Slurm array), joined by "
        "`megatron-meta merge`; one run needs none (input is streamed, memory stays flat)",
    )
    g.add_argument(
        "--partition-index",
        type=int,
        default=None,
        metavar="I",
        help="which part this run writes, 0..N-1 (e.g. $SLURM_ARRAY_TASK_ID)",
    )
    g.add_argument("--append-eod", action="store_true", help="end every document with the EOD id")
    g.add_argument(
        "--prepend-bos",
        action="store_true",
        help="start every document with the BOS id (the paper's protocol: BOS, no EOD)",
    )
    g.add_argument(
        "--split-sentences",
        action="store_true",
        help="one sequence per sentence (offline punkt learned from the corpus)",
    )
    g.add_argument(
        "--keep-newlines",
        action="store_true",
        help="accepted for compatibility; newlines are always kept (texts are exact)",
    )
    g.add_argument("--log-interval", type=int, default=10000, help="log every N documents")
    m = parser.add_argument_group("metadata")
    m.add_argument(
        "--metadata-variants",
        default="full",
        help=f"comma list of {', '.join(VARIANTS)} (default: full)",
    )
    m.add_argument(
        "--url-form",
        choices=URL_FORMS,
        default="full",
        help="URL line holds the full URL or its domain only (MeCo)",
    )
    m.add_argument(
        "--split-by",
        choices=SPLIT_BY,
        default="none",
        help="separate shards per continent or country",
    )
    h = parser.add_argument_group("held-out data")
    h.add_argument(
        "--holdout-test",
        type=int,
        default=0,
        metavar="N",
        help="exactly N test documents per region, written as JSONL, not to shards",
    )
    h.add_argument(
        "--holdout-valid-fraction",
        type=float,
        default=0.0,
        metavar="F",
        help="expected share F of the remaining documents held out as validation JSONL",
    )
    h.add_argument("--seed", type=int, default=1234, help="seed of the held-out split")
    parser.add_argument(
        "--on-bad-record",
        choices=("error", "skip"),
        default="error",
        help="stop at the first bad record (error) or skip and count it",
    )
    parser.add_argument(
        "--shared-body",
        choices=("auto", "off"),
        default="auto",
        help="auto: tokenize the body once for all variants where proven exact",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def config_from_args(args: argparse.Namespace, argv: List[str]) -> PreprocessConfig:
    from megatron_meta.corpora.registry import corpus_spec_from_args

    if args.keep_newlines:
        logger.info("--keep-newlines: newlines are always kept")
    if args.partitions > 1 and args.partition_index is None:
        # Megatron-LM's --partitions splits and merges within one run; ours is one part a run.
        raise ConfigError(
            f"--partitions {args.partitions} needs --partition-index I (0..{args.partitions - 1}): "
            "each part is its own run (e.g. a Slurm array), joined by `megatron-meta merge`; "
            "one run over the whole input needs no --partitions"
        )
    if args.log_interval <= 0:
        raise ConfigError(f"--log-interval {args.log_interval}: must be positive")
    return PreprocessConfig(
        corpus=corpus_spec_from_args(args),
        output_prefix=args.output_prefix,
        tokenizer_type=args.tokenizer_type,
        tokenizer_model=args.tokenizer_model,
        variants=parse_variants(args.metadata_variants),
        url_form=args.url_form,
        split_by=args.split_by,
        append_eod=args.append_eod,
        prepend_bos=args.prepend_bos,
        split_sentences=args.split_sentences,
        workers=args.workers,
        holdout=HoldoutConfig(args.holdout_test, args.holdout_valid_fraction, args.seed),
        on_bad_record=args.on_bad_record,
        log_interval=args.log_interval,
        shared_body=args.shared_body,
        partitions=args.partitions,
        partition_index=args.partition_index or 0,
        command=["megatron-meta", "preprocess"] + list(argv),
        progress_bar=not args.no_progress,
    )


def main(argv: List[str]) -> int:
    from megatron_meta.tokenizer.load import quiet_megatron_logs

    quiet_megatron_logs()
    args = build_parser().parse_args(argv)
    config = config_from_args(args, argv)
    if config.split_sentences:
        logger.warning(
            "--split-sentences: one sequence per sentence; GPTDataset treats each sequence as a "
            "document, so only the first sentence carries the metadata in GPT training"
        )
    prefix = config.output_prefix
    check_output(prefix, "--output-prefix", kind="prefix",
                 inputs=[p for p in getattr(args, "input", None) or [] if os.path.isdir(p)])
    with disk_full_guard(prefix, lambda: glob.glob(f"{glob.escape(prefix)}*.tmp-{os.getpid()}")):
        result = run_preprocess(config)  # removes its own temporaries on any error
    summary = [
        f"wrote {len(result.manifest.shards)} shard(s), {result.documents} training documents "
        f"per variant, {result.held_out} held out, in {result.seconds:.1f} s "
        f"({result.text_bytes / max(result.seconds, 1e-9) / 1e6:.2f} MB/s of text)",
    ]
    for s in result.manifest.shards:
        summary.append(
            f"  {s.variant:<15} {s.region or '-':<10} {s.documents:>9} docs "
            f"{s.tokens:>12} tokens  {s.prefix}"
        )
    for h in result.manifest.holdout:
        summary.append(f"  {h.split:<15} {h.region or '-':<10} {h.documents:>9} docs  {h.path}")
    if result.manifest.skipped:
        summary.append(f"skipped records: {result.manifest.skipped}")
    summary.append(f"manifest: {result.manifest_path}")
    print("\n".join(summary), file=sys.stdout)
    return 0
