"""One preprocessing run: read -> hold out -> encode in workers -> write shards -> manifest.

The main process streams documents from the corpus reader, routes held-out ones to JSONL, groups
the rest per region into chunks (about ``chunk_bytes`` of text each) and hands chunks to worker
processes (:mod:`~megatron_meta.preprocess.workers`), a bounded number in flight, so memory stays
flat whatever the corpus size. Results are written in submission order, which is fixed by the
input alone: the same input gives byte-identical shards with any number of workers.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import time
from typing import Dict, Iterator, List, Optional, Tuple

from megatron_meta.corpora.bad_records import BadRecords
from megatron_meta.corpora.records import Document
from megatron_meta.corpora.registry import CorpusSpec, iter_documents
from megatron_meta.errors import ConfigError
from megatron_meta.metadata.regions import slug
from megatron_meta.preprocess.holdout import HoldoutConfig, HoldoutSelector
from megatron_meta.manifest import (
    HoldoutEntry,
    Manifest,
    ShardEntry,
    TokenizerInfo,
    write_manifest,
)
from megatron_meta.preprocess.partition import Part, fingerprint, inputs_record
from megatron_meta.preprocess.pipeline import DocumentEncoder, EncoderConfig
from megatron_meta.preprocess.progress import Progress
from megatron_meta.tokenizer.load import special_tokens
from megatron_meta.preprocess.sharing import choose_shared_body, sample_documents
from megatron_meta.preprocess.workers import WorkerPool
from megatron_meta.preprocess.writer import OutputSet, token_dtype

logger = logging.getLogger(__name__)

SPLIT_BY = ("none", "continent", "country")


@dataclasses.dataclass
class PreprocessConfig:
    """A preprocessing run (built from the CLI flags)."""

    corpus: CorpusSpec
    """What to read (``--input`` and the corpus flags)."""
    output_prefix: str
    """``--output-prefix``: shards are ``{prefix}_{variant}[_{region}]_text_document``."""
    tokenizer_type: str
    """``--tokenizer-type`` (Megatron-LM name)."""
    tokenizer_model: str
    """``--tokenizer-model``."""
    variants: List[str]
    """``--metadata-variants``, parsed."""
    url_form: str = "full"
    """``--url-form full|domain``."""
    split_by: str = "none"
    """``--split-by none|continent|country``."""
    append_eod: bool = False
    """``--append-eod``."""
    split_sentences: bool = False
    """``--split-sentences``: one sequence per sentence (Megatron's sentence layout)."""
    workers: int = 1
    """``--workers``: encoding processes (0 encodes in the main process)."""
    holdout: HoldoutConfig = dataclasses.field(default_factory=HoldoutConfig)
    """``--holdout-test``, ``--holdout-valid-fraction``, ``--seed``."""
    on_bad_record: str = "error"
    """``--on-bad-record error|skip``."""
    log_interval: int = 10000
    """``--log-interval``: log progress every this many documents."""
    chunk_bytes: int = 1 << 19
    """Text bytes per worker task: large enough to amortize inter-process overhead, small
    enough that the last tasks leave little idle time."""
    shared_body: str = "auto"
    """``auto`` (when proven and checked) or ``off`` (always encode each full text)."""
    partitions: int = 1
    """``--partitions N``: the corpus is cut into N parts, each written by its own run."""
    partition_index: int = 0
    """``--partition-index I``: which part this run writes (0..N-1)."""
    command: List[str] = dataclasses.field(default_factory=list)
    """The command line, recorded in the manifest."""
    progress_bar: bool = True
    """Show a tqdm bar (on a terminal)."""


@dataclasses.dataclass
class PreprocessResult:
    manifest_path: str
    manifest: Manifest
    documents: int
    """Training documents written (per variant)."""
    held_out: int
    text_bytes: int
    seconds: float
    shared_body: bool


def region_of(doc: Document, split_by: str) -> Optional[str]:
    if split_by == "continent":
        return doc.continent
    if split_by == "country":
        return doc.country
    return None


def shard_prefix(output_prefix: str, variant: str, region: Optional[str], sentences: bool) -> str:
    kind = "sentence" if sentences else "document"
    middle = f"_{slug(region)}" if region is not None else ""
    return f"{output_prefix}_{variant}{middle}_text_{kind}"


def holdout_path(output_prefix: str, split: str, region: Optional[str]) -> str:
    middle = f"_{slug(region)}" if region is not None else ""
    return f"{output_prefix}_{split}{middle}.jsonl"


def run_preprocess(config: PreprocessConfig) -> PreprocessResult:
    """Run preprocessing end to end; raises MegatronMetaError subclasses on user errors."""
    if config.split_by not in SPLIT_BY:
        raise ConfigError(f"--split-by {config.split_by!r}: choose from {', '.join(SPLIT_BY)}")
    if config.workers < 0:
        raise ConfigError(f"--workers {config.workers}: must be >= 0")
    config.holdout.validate()
    Part(config.partition_index, config.partitions).validate()
    # One thread per worker process: the workers are the parallelism.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out_dir = os.path.dirname(os.path.abspath(config.output_prefix))
    os.makedirs(out_dir, exist_ok=True)
    with contextlib.ExitStack() as stack:
        # Workers first, while this process is still small (see workers.py).
        pool = stack.enter_context(WorkerPool(config.workers)) if config.workers > 0 else None
        return _run(config, pool)


def _run(config: PreprocessConfig, pool: Optional[WorkerPool]) -> PreprocessResult:
    from megatron_meta.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(config.tokenizer_type, config.tokenizer_model)
    if config.append_eod and tokenizer.eod is None:
        raise ConfigError(
            f"--append-eod: tokenizer {config.tokenizer_model} has no end-of-document token"
        )
    dtype = token_dtype(tokenizer.vocab_size)
    bad = BadRecords(config.on_bad_record)

    selector = HoldoutSelector(config.holdout)
    part = Part(config.partition_index, config.partitions) if config.partitions > 1 else None
    if config.holdout.test_per_region > 0 or part is not None:
        total = _first_pass(config, selector)
        if part is not None:
            part.total = total
            lo, hi = part.bounds
            logger.info("part %d of %d: documents [%d, %d) of %d", part.index, part.count, lo, hi, total)

    if part is None:
        sample, stream = sample_documents(iter_documents(config.corpus, bad), config.split_sentences)
        positioned: Iterator[Tuple[int, Document]] = enumerate(stream)
    else:
        # Every part decides from the corpus's first documents; its own pass starts afresh.
        quiet = BadRecords(config.on_bad_record, log_first=0)
        sample, _ = sample_documents(iter_documents(config.corpus, quiet), config.split_sentences)
        positioned = part.select(iter_documents(config.corpus, bad), bad)
    punkt = None
    if config.split_sentences:
        from megatron_meta.preprocess.sentences import train_punkt

        punkt = train_punkt(d.text for d in sample)
    enc_config = EncoderConfig(
        tokenizer_type=config.tokenizer_type,
        tokenizer_model=os.path.abspath(config.tokenizer_model),
        variants=list(config.variants),
        url_form=config.url_form,
        append_eod=config.append_eod,
        dtype=dtype.name,
        punkt_params=punkt,
        eod_id=int(tokenizer.eod) if tokenizer.eod is not None else -1,
    )
    enc_config.shared_body, enc_config.library = choose_shared_body(
        tokenizer, enc_config, sample, allow=config.shared_body == "auto"
    )
    if pool is not None:
        pool.configure(enc_config)
    outputs = OutputSet(config.output_prefix + ".manifest.json")
    try:
        counts = _encode_and_write(
            config, enc_config, tokenizer, positioned, selector, outputs, pool
        )
        manifest = _build_manifest(config, tokenizer, outputs, bad, part)
        outputs.commit(lambda: write_manifest(manifest, outputs.manifest_path))
    except BaseException:
        outputs.abort()
        raise
    if manifest.skipped:
        logger.warning(
            "skipped %d bad records: %s", sum(manifest.skipped.values()), manifest.skipped
        )
    return PreprocessResult(
        manifest_path=outputs.manifest_path,
        manifest=manifest,
        documents=int(counts["documents"]),
        held_out=int(counts["held_out"]),
        text_bytes=int(counts["text_bytes"]),
        seconds=counts["seconds"],
        shared_body=bool(enc_config.shared_body),
    )


def _first_pass(config: PreprocessConfig, selector: HoldoutSelector) -> int:
    """Read the corpus once, silently: count its documents, pick the test documents."""
    scan_bad = BadRecords(config.on_bad_record, log_first=0)  # reported in the second pass
    total = 0

    def entries():
        nonlocal total
        for i, d in enumerate(iter_documents(config.corpus, scan_bad)):
            total = i + 1
            yield i, region_of(d, config.split_by), d.id

    if config.holdout.test_per_region > 0:
        selector.scan(entries())
    else:
        collections.deque(entries(), maxlen=0)
    return total


def _chunks(
    config: PreprocessConfig,
    positioned: Iterator[Tuple[int, Document]],
    selector: HoldoutSelector,
    outputs: OutputSet,
    counts: Dict[str, float],
) -> Iterator[Tuple[Optional[str], List[Document]]]:
    """Route held-out documents to JSONL; yield ``(region, docs)`` chunks of training documents."""
    pending: Dict[Optional[str], List[Document]] = {}
    sizes: Dict[Optional[str], int] = collections.defaultdict(int)
    for position, doc in positioned:
        region = region_of(doc, config.split_by)
        split = selector.assign(position, doc.id)
        if split is not None:
            path = holdout_path(config.output_prefix, split, region)
            outputs.holdout((split, region), path).add(doc)
            counts["held_out"] += 1
            continue
        buf = pending.setdefault(region, [])
        buf.append(doc)
        text = doc.text
        # isascii() is O(1) in CPython: most texts skip building a UTF-8 copy just to count it.
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
        sizes[region] += size
        counts["text_bytes"] += size
        if sizes[region] >= config.chunk_bytes:
            yield region, pending.pop(region)
            sizes[region] = 0
    for region, buf in pending.items():
        if buf:
            yield region, buf


def _encode_and_write(
    config: PreprocessConfig,
    enc_config: EncoderConfig,
    tokenizer,
    positioned: Iterator[Tuple[int, Document]],
    selector: HoldoutSelector,
    outputs: OutputSet,
    pool: Optional[WorkerPool],
) -> Dict[str, float]:
    counts: Dict[str, float] = collections.defaultdict(int)
    dtype = token_dtype(tokenizer.vocab_size)
    progress = Progress(config.log_interval, enabled=config.progress_bar)
    start = time.perf_counter()

    def write(region: Optional[str], encoded) -> None:
        for variant in config.variants:
            prefix = shard_prefix(config.output_prefix, variant, region, config.split_sentences)
            outputs.shard((variant, region), prefix, dtype).add(encoded[variant])
        n = len(encoded[config.variants[0]].document_sequences)
        counts["documents"] += n
        progress.update(n, counts["text_bytes"])

    chunks = _chunks(config, positioned, selector, outputs, counts)
    if pool is None:
        encoder = DocumentEncoder(enc_config, tokenizer)
        for region, docs in chunks:
            write(region, encoder.encode(docs))
    else:
        pool.run(chunks, write)
    progress.close(counts["documents"], counts["text_bytes"])
    counts["seconds"] = time.perf_counter() - start
    return counts


def _build_manifest(
    config: PreprocessConfig, tokenizer, outputs: OutputSet, bad: BadRecords, part: Optional[Part]
) -> Manifest:
    order = {v: i for i, v in enumerate(config.variants)}
    shards = [
        ShardEntry(
            prefix=os.path.abspath(w.prefix),
            variant=variant,
            region=region,
            documents=w.documents,
            tokens=w.tokens,
            metadata_tokens=os.path.abspath(w.sidecar),
        )
        for (variant, region), w in sorted(
            outputs.shards.items(), key=lambda kv: (order[kv[0][0]], kv[0][1] or "")
        )
    ]
    holdout = [
        HoldoutEntry(
            path=os.path.abspath(w.path), split=split, region=region, documents=w.documents
        )
        for (split, region), w in sorted(
            outputs.holdouts.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")
        )
    ]
    if not shards and part is None:  # a part may be empty (more parts than documents)
        raise ConfigError("no training documents were written; check --input and the holdout flags")
    partition = None
    if part is not None:
        partition = part.record(
            {
                "variants": list(config.variants),
                "seed": config.holdout.seed,
                "holdout_test": config.holdout.test_per_region,
                "holdout_valid_fraction": config.holdout.valid_fraction,
                "inputs": inputs_record(config.corpus.inputs),
                "tokenizer_sha256": fingerprint(config.tokenizer_model),
            }
        )
    return Manifest(
        tokenizer=TokenizerInfo(
            type=config.tokenizer_type,
            model=os.path.abspath(config.tokenizer_model),
            vocab_size=int(tokenizer.vocab_size),
            eod_id=int(tokenizer.eod) if tokenizer.eod is not None else -1,
            **special_tokens(tokenizer),
        ),
        shards=shards,
        holdout=holdout,
        skipped=bad.summary() if part is None else part.skipped,
        command=list(config.command),
        split_by=config.split_by,
        url_form=config.url_form,
        append_eod=config.append_eod,
        split_sentences=config.split_sentences,
        partition=partition,
    )
