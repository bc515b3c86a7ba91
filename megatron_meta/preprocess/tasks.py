"""One job of a preprocessing run, done by a worker on its own (worker side).

A :class:`Job` is a contiguous piece of the corpus: a :class:`~megatron_meta.corpora.ranges.ReadTask`
the worker reads itself, or documents the main process read (formats without read tasks). The
worker parses, routes held-out documents, groups the rest per region into chunks, encodes every
variant (:mod:`~megatron_meta.preprocess.pipeline`) and writes its own piece of every shard and
held-out file into the run's pieces folder. The main process joins the pieces in job order, which
is corpus order, so the output is the same however the corpus is cut and however many workers run.

Positions: a job knows the corpus position of its first document (``offset``) when a first pass
counted the documents (``--holdout-test``, ``--partitions``); test documents and a part's window
are given to it in its own document indices. A bad record belongs to the next good document (its
index is the number of good documents before it in the job), so the parts' counts add up.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Dict, FrozenSet, Iterator, List, Optional, Tuple

import numpy as np

from megatron_meta.corpora.bad_records import BadRecords
from megatron_meta.corpora.cleaning import clean_document
from megatron_meta.corpora.ranges import ReadTask, read_task
from megatron_meta.corpora.records import Document
from megatron_meta.corpora.registry import CorpusSpec
from megatron_meta.metadata.regions import slug
from megatron_meta.preprocess.holdout import HoldoutConfig, HoldoutSelector, TestHeaps
from megatron_meta.preprocess.pipeline import DocumentEncoder, EncoderConfig
from megatron_meta.preprocess.writer import HoldoutWriter, ShardWriter

Key = Tuple[str, Optional[str]]
Window = Tuple[int, Optional[int]]  # [lo, hi) of a job's document indices; hi None: open


@dataclasses.dataclass
class JobSettings:
    """What every job of a run shares (sent once per worker, with the encoder's config)."""

    corpus: CorpusSpec
    split_by: str
    holdout: HoldoutConfig
    on_bad_record: str
    chunk_bytes: int
    pieces_dir: str


@dataclasses.dataclass
class Job:
    index: int
    """Position in the run's job order (names the pieces)."""
    read: Optional[ReadTask] = None
    """Input the worker reads; or:"""
    docs: Optional[List[tuple]] = None
    """documents the main process read (field tuples), held-out ones already removed."""
    test: FrozenSet[int] = frozenset()
    """Indices (within the job) of its test documents."""
    window: Window = (0, None)
    """Documents to keep (a part's share of the job)."""
    bad_window: Window = (0, None)
    """Bad records to count, by the index of the next good document."""
    seen_before: FrozenSet[str] = frozenset()
    """NOW: ids of this task's documents that earlier tasks already had (dropped as repeats,
    ``duplicate_id``, as one sequential read drops them)."""


@dataclasses.dataclass
class Piece:
    path: str
    """Shard prefix (pieces of shards) or JSONL path (held-out pieces)."""
    documents: int


@dataclasses.dataclass
class JobResult:
    index: int
    read_documents: int = 0
    """Good documents the job read (inside its window or not)."""
    documents: int = 0
    """Training documents written (per variant)."""
    held_out: int = 0
    text_bytes: int = 0
    shards: Dict[Key, Piece] = dataclasses.field(default_factory=dict)
    holdouts: Dict[Key, Piece] = dataclasses.field(default_factory=dict)
    skipped: Dict[str, int] = dataclasses.field(default_factory=dict)


def region_of(doc: Document, split_by: str) -> Optional[str]:
    if split_by == "continent":
        return doc.continent
    if split_by == "country":
        return doc.country
    return None


class _WindowedBad(BadRecords):
    """Counts only the bad records whose next good document is in the job's bad window."""

    def __init__(self, mode: str, window: Window) -> None:
        super().__init__(mode)
        self.window = window
        self.good = 0  # good documents so far

    def _inside(self) -> bool:
        lo, hi = self.window
        return lo <= self.good and (hi is None or self.good < hi)

    def report(self, reason: str, where: str, detail: str) -> None:
        if self._inside():
            super().report(reason, where, detail)

    def merge(self, other: Dict[str, int]) -> None:
        if self._inside():
            super().merge(other)


class JobRunner:
    """Does jobs with one encoder (one per worker process, or the main one with ``--workers 0``)."""

    def __init__(self, encoder: EncoderConfig, settings: JobSettings, tokenizer=None) -> None:
        self.settings = settings
        self.variants = encoder.variants
        self.dtype = encoder.dtype
        self.encoder = DocumentEncoder(encoder, tokenizer)
        self.selector = HoldoutSelector(settings.holdout)

    # -- reading -----------------------------------------------------------------------------
    def _documents(self, job: Job, bad: _WindowedBad) -> Iterator[Document]:
        """The job's good documents in order (``bad.good`` counts them as they come)."""
        if job.docs is not None:
            for row in job.docs:
                yield Document(*row)
                bad.good += 1
            return
        assert job.read is not None
        countries = self.settings.corpus.countries
        cleaning = self.settings.corpus.cleaning
        # NOW's ids are its articles' (see DEDUPLICATED_FORMATS): a repeat is dropped before
        # cleaning, as clean_documents does in one sequential read.
        seen = set(job.seen_before) if job.read.reader == "now" else None
        for doc in read_task(self.settings.corpus, job.read, bad):
            if countries is not None and doc.country not in countries:
                # Counted like a bad record: by the next good document's index.
                bad.merge({"excluded_country": 1})
                continue
            if seen is not None:
                if doc.id in seen:
                    bad.merge({"duplicate_id": 1})
                    continue
                seen.add(doc.id)
            doc = clean_document(doc, cleaning, bad)
            if doc is None:
                continue
            yield doc
            bad.good += 1

    def scan(self, job: Job) -> Tuple[int, TestHeaps]:
        """First pass: the job's documents and its test candidates (positions within the job)."""
        bad = _WindowedBad(self.settings.on_bad_record, (0, None))
        bad.log_first = 0  # reported in the second pass
        heaps = TestHeaps(self.settings.holdout)
        split_by = self.settings.split_by
        n = 0
        for n, doc in enumerate(self._documents(job, bad), 1):
            heaps.add(n - 1, region_of(doc, split_by), doc.id)
        return n, heaps

    def ids(self, job: Job) -> np.ndarray:
        """NOW, before the other passes: the ids of the task's documents as read (repeats and
        documents that cleaning would empty included), for :func:`seen_before`."""
        assert job.read is not None
        # Never raises: under --on-bad-record error the later passes stop at the first bad record
        # in corpus order (this pass runs tasks out of order and skips cleaning).
        bad = BadRecords("skip", log_first=0)
        ids = [doc.id for doc in read_task(self.settings.corpus, job.read, bad)]
        # NOW's ids are digits: int64 is 8 bytes an id in the pipe and in the main process.
        if all(i.isdigit() and len(i) < 19 and (i[0] != "0" or i == "0") for i in ids):
            return np.fromiter(map(int, ids), dtype=np.int64, count=len(ids))
        return np.asarray(ids, dtype=object)

    # -- the job -----------------------------------------------------------------------------
    def run(self, job: Job) -> JobResult:
        s = self.settings
        result = JobResult(job.index)
        bad = _WindowedBad(s.on_bad_record, job.bad_window)
        lo, hi = job.window
        stem = os.path.join(s.pieces_dir, f"j{job.index:07d}")
        shards: Dict[Key, ShardWriter] = {}
        holdouts: Dict[Key, HoldoutWriter] = {}
        pending: Dict[Optional[str], List[Document]] = {}
        sizes: Dict[Optional[str], int] = collections.defaultdict(int)
        try:

            def flush(region: Optional[str]) -> None:
                encoded = self.encoder.encode(pending.pop(region))
                sizes[region] = 0
                for variant in self.variants:
                    key = (variant, region)
                    if key not in shards:
                        shards[key] = ShardWriter(f"{stem}_{variant}{_middle(region)}", self.dtype)
                    shards[key].add(encoded[variant])

            for i, doc in enumerate(self._documents(job, bad)):
                if i < lo:
                    continue
                if hi is not None and i >= hi:
                    break
                region = region_of(doc, s.split_by)
                split = "test" if i in job.test else None
                if split is None and self.selector.is_valid(doc.id):
                    split = "valid"
                if split is not None:
                    key = (split, region)
                    if key not in holdouts:
                        holdouts[key] = HoldoutWriter(f"{stem}_{split}{_middle(region)}.jsonl")
                    holdouts[key].add(doc)
                    result.held_out += 1
                    continue
                pending.setdefault(region, []).append(doc)
                text = doc.text
                # isascii() is O(1) in CPython: most texts skip a UTF-8 copy just to count it.
                size = len(text) if text.isascii() else len(text.encode("utf-8"))
                sizes[region] += size
                result.text_bytes += size
                result.documents += 1
                if sizes[region] >= s.chunk_bytes:
                    flush(region)
            for region in list(pending):
                flush(region)
            result.read_documents = bad.good
            for key, w in shards.items():
                for tmp, final in w.finalize():
                    os.replace(tmp, final)
                result.shards[key] = Piece(w.prefix, w.documents)
            for key, h in holdouts.items():
                for tmp, final in h.finalize():
                    os.replace(tmp, final)
                result.holdouts[key] = Piece(h.path, h.documents)
        except BaseException:
            for w in list(shards.values()) + list(holdouts.values()):
                w.close()
            raise
        result.skipped = bad.summary()
        return result


def _middle(region: Optional[str]) -> str:
    return f"_{slug(region)}" if region is not None else ""


# -- worker process glue ----------------------------------------------------------------------
# One runner per worker process, built by the pool initializer (the usual Pool pattern).
_RUNNER: Optional[JobRunner] = None


def init_worker_from_queue(configs) -> None:
    """Pool initializer: wait for this worker's ``(EncoderConfig, JobSettings)`` on ``configs``."""
    import signal

    # Ctrl-C is handled by the main process, which terminates the pool and removes temp files.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _RUNNER
    _RUNNER = JobRunner(*configs.get())


def run_job(job: Job) -> JobResult:
    assert _RUNNER is not None, "init_worker was not called"
    return _RUNNER.run(job)


def scan_job(job: Job) -> Tuple[int, TestHeaps]:
    assert _RUNNER is not None, "init_worker was not called"
    return _RUNNER.scan(job)


def ids_job(job: Job) -> np.ndarray:
    assert _RUNNER is not None, "init_worker was not called"
    return _RUNNER.ids(job)


def seen_before(id_arrays: List[np.ndarray]) -> List[FrozenSet[str]]:
    """Per task, the ids an earlier task already had (main side, from :meth:`JobRunner.ids`)."""
    if not id_arrays:
        return []
    if any(a.dtype == object for a in id_arrays):
        out, seen = [], set()
        for a in id_arrays:
            ids = {str(i) for i in a.tolist()}
            out.append(frozenset(ids & seen))
            seen |= ids
        return out
    ids = np.concatenate(id_arrays)
    owner = np.repeat(np.arange(len(id_arrays)), [len(a) for a in id_arrays])
    unique, first = np.unique(ids, return_index=True)  # first: the earliest position of each id
    earlier = owner[first][np.searchsorted(unique, ids)] < owner
    out: List[set] = [set() for _ in id_arrays]
    for task, i in zip(owner[earlier].tolist(), ids[earlier].tolist()):
        out[task].add(str(i))
    return [frozenset(s) for s in out]
