"""One preprocessing run: start-up checks -> jobs in workers -> join pieces -> finalize.

The main process decides how to encode (:mod:`~megatron_meta.preprocess.sharing`, on the corpus's
first documents), cuts the input into jobs and hands them to worker processes, a bounded number in
flight (:mod:`~megatron_meta.preprocess.dispatch`). Each worker reads its piece of the input,
routes held-out documents, encodes every variant and writes its own piece of every output file
(:mod:`~megatron_meta.preprocess.tasks`); the main process appends the pieces in job order, which
is corpus order: the same input gives byte-identical outputs with any number of workers, however
it is cut. :meth:`OutputSet.commit` is the one finalize step (renames, then the manifest).
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
from megatron_meta.corpora.registry import CorpusSpec, iter_documents, now_corpus, resolve_format
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
from megatron_meta.corpora.ranges import plan_tasks
from megatron_meta.preprocess.dispatch import Dispatcher, stream_jobs, task_jobs
from megatron_meta.preprocess.pipeline import EncoderConfig
from megatron_meta.preprocess.progress import Progress
from megatron_meta.tokenizer.load import special_tokens
from megatron_meta.preprocess.sharing import choose_shared_body, sample_documents
from megatron_meta.preprocess.tasks import JobRunner, JobSettings, region_of
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
    """Text bytes per library call batch inside a worker (a chunk of one region)."""
    task_bytes: int = 0
    """Input bytes per job; 0: about a quarter of the input's share per worker, between 1 and
    64 MB, so the last jobs leave little idle time. Any value gives the same outputs."""
    prepend_bos: bool = False
    """``--prepend-bos``: a BOS token before every document (the paper's protocol, with
    ``--append-eod`` off)."""
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
    job_cpu: float = 0.0
    """Main-process CPU seconds while the jobs ran (start-up excluded): its cost per MB."""


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
    from megatron_meta.corpora.now import release_corpora

    try:
        if resolve_format(config.corpus) == "now":
            # NOW's sources rows before the fork, so the workers share them instead of each
            # loading them again; bad rows are counted (from the cache) where tasks are planned.
            now_corpus(config.corpus, BadRecords(config.on_bad_record))
        with contextlib.ExitStack() as stack:
            # Workers first, while this process is still small (see workers.py).
            pool = stack.enter_context(WorkerPool(config.workers)) if config.workers > 0 else None
            return _run(config, pool)
    finally:
        release_corpora()


def _run(config: PreprocessConfig, pool: Optional[WorkerPool]) -> PreprocessResult:
    from megatron_meta.tokenizer.load import load_tokenizer_fast

    tokenizer = load_tokenizer_fast(config.tokenizer_type, config.tokenizer_model)
    if config.append_eod and tokenizer.eod is None:
        raise ConfigError(
            f"--append-eod: tokenizer {config.tokenizer_model} has no end-of-document token"
        )
    bos = special_tokens(tokenizer).get("bos_id")
    if config.prepend_bos and bos is None:
        raise ConfigError(
            f"--prepend-bos: tokenizer {config.tokenizer_model} has no BOS token; leave the flag off"
        )
    dtype = token_dtype(tokenizer.vocab_size)
    bad = BadRecords(config.on_bad_record)
    selector = HoldoutSelector(config.holdout)
    part = Part(config.partition_index, config.partitions) if config.partitions > 1 else None
    needs_positions = config.holdout.test_per_region > 0 or part is not None
    quiet = BadRecords(config.on_bad_record, log_first=0)  # reported again where it is read
    # NOW's bad sources rows come before its first document: the part that has it counts them.
    sources_bad = bad if part is None or part.index == 0 else quiet
    tasks = plan_tasks(config.corpus, _task_bytes(config), sources_bad)

    positioned: Optional[Iterator[Tuple[int, Document]]] = None
    if tasks is not None:
        sample, _ = sample_documents(iter_documents(config.corpus, quiet), config.split_sentences)
    else:
        if needs_positions:
            total = _first_pass(config, selector)
            if part is not None:
                part.total = total
                _log_part(part)
        if part is None:
            sample, stream = sample_documents(iter_documents(config.corpus, bad), config.split_sentences)
            positioned = enumerate(stream)
        else:
            # Every part decides from the corpus's first documents; its own pass starts afresh.
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
        prepend_bos=config.prepend_bos,
        bos_id=int(bos) if bos is not None else -1,
    )
    enc_config.shared_body, enc_config.library = choose_shared_body(
        tokenizer, enc_config, sample, allow=config.shared_body == "auto"
    )
    outputs = OutputSet(config.output_prefix + ".manifest.json")
    try:
        settings = JobSettings(
            corpus=config.corpus,
            split_by=config.split_by,
            holdout=config.holdout,
            on_bad_record=config.on_bad_record,
            chunk_bytes=config.chunk_bytes,
            pieces_dir=outputs.pieces_dir(),
        )
        if pool is not None:
            pool.configure(enc_config, settings)
        dispatcher = Dispatcher(
            pool, None if pool is not None else JobRunner(enc_config, settings, tokenizer)
        )
        if tasks is not None:
            seen = dispatcher.repeats(tasks)
            doc_counts = dispatcher.scan(tasks, selector, seen) if needs_positions else None
            if part is not None:
                part.total = sum(doc_counts)
                _log_part(part)
            jobs = task_jobs(tasks, doc_counts, selector, part, seen)
        else:
            jobs = stream_jobs(positioned, selector, _task_bytes(config))
        progress = Progress(config.log_interval, enabled=config.progress_bar)
        start, cpu = time.perf_counter(), time.process_time()
        counts = dispatcher.run(
            jobs,
            outputs,
            lambda v, r: shard_prefix(config.output_prefix, v, r, config.split_sentences),
            lambda split, r: holdout_path(config.output_prefix, split, r),
            dtype,
            progress,
        )
        progress.close(counts["documents"], counts["text_bytes"])
        counts["seconds"] = time.perf_counter() - start
        counts["job_cpu"] = time.process_time() - cpu
        skipped = collections.Counter(counts["skipped"])
        skipped.update(bad.summary() if part is None or tasks is not None else part.skipped)
        manifest = _build_manifest(config, tokenizer, outputs, dict(sorted(skipped.items())), part)
        outputs.commit(lambda: write_manifest(manifest, outputs.manifest_path))
    except BaseException:
        if pool is not None:
            pool.stop()  # no worker may still write while its pieces are removed
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
        job_cpu=counts["job_cpu"],
    )


def _log_part(part: Part) -> None:
    lo, hi = part.bounds
    logger.info("part %d of %d: documents [%d, %d) of %d", part.index, part.count, lo, hi, part.total)


def _task_bytes(config: PreprocessConfig) -> int:
    if config.task_bytes > 0:
        return config.task_bytes
    size = sum(s or 0 for _, s in inputs_record(config.corpus.inputs))
    return int(min(64 << 20, max(1 << 20, size / (4 * max(config.workers, 1)))))


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


def _build_manifest(
    config: PreprocessConfig, tokenizer, outputs: OutputSet, skipped: Dict[str, int],
    part: Optional[Part],
) -> Manifest:  # fmt: skip
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
        skipped=skipped,
        command=list(config.command),
        split_by=config.split_by,
        url_form=config.url_form,
        append_eod=config.append_eod,
        prepend_bos=config.prepend_bos,
        split_sentences=config.split_sentences,
        partition=partition,
    )
