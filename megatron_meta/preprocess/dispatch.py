"""Handing out jobs and joining their pieces (main side of a run).

Formats with read tasks (JSONL, Parquet, ``datasets``; :mod:`~megatron_meta.corpora.ranges`): the
main process only cuts the input, hands the tasks out and appends each job's pieces to the final
shards (copying bytes and blocks of index arrays), so its work per document is nearly nil and one
node scales to as many workers as it has cores. When positions are needed (``--holdout-test``,
``--partitions``) a first pass, also in the workers, counts each task's documents and keeps its
test candidates; the main process turns them into corpus positions.

NOW is read in tasks too (one a text file); as it drops repeated ids corpus-wide, a first pass
over more than one text file collects each task's ids, and each job is told which of its ids an
earlier task had. The embedded news corpus is read by the main process, which sends the
documents in jobs of the same size; the rest is the same.
"""

from __future__ import annotations

import collections
import logging
from typing import Callable, Dict, FrozenSet, Iterator, List, Optional, Tuple

from megatron_meta.corpora.ranges import ReadTask
from megatron_meta.corpora.records import Document
from megatron_meta.preprocess.holdout import HoldoutSelector, TestHeaps
from megatron_meta.preprocess.partition import Part
from megatron_meta.preprocess.progress import Progress
from megatron_meta.preprocess.tasks import (
    Job,
    JobResult,
    JobRunner,
    ids_job,
    run_job,
    scan_job,
    seen_before,
)
from megatron_meta.preprocess.workers import DOC_FIELDS, WorkerPool
from megatron_meta.preprocess.writer import OutputSet

logger = logging.getLogger(__name__)

Names = Callable[[str, Optional[str]], str]


class Dispatcher:
    """Runs jobs in the pool (or inline with ``--workers 0``) and joins results in job order."""

    def __init__(self, pool: Optional[WorkerPool], inline: Optional[JobRunner]) -> None:
        self.pool = pool
        self.inline = inline

    def map(self, fn, method: str, jobs, handle) -> None:
        if self.pool is not None:
            self.pool.map_ordered(fn, jobs, handle)
        else:
            assert self.inline is not None
            for job in jobs:
                handle(getattr(self.inline, method)(job))

    # -- first passes ------------------------------------------------------------------------
    def repeats(self, tasks: List[ReadTask]) -> Optional[List[FrozenSet[str]]]:
        """NOW over several text files: per task, its ids that an earlier task had."""
        if len(tasks) < 2 or tasks[0].reader != "now":
            return None
        arrays: List = []
        self.map(ids_job, "ids", (Job(index=i, read=t) for i, t in enumerate(tasks)), arrays.append)
        return seen_before(arrays)

    def scan(
        self, tasks: List[ReadTask], selector: HoldoutSelector,
        seen: Optional[List[FrozenSet[str]]] = None,
    ) -> List[int]:  # fmt: skip
        """Documents per task; chooses ``selector``'s test documents when it holds some out."""
        counts: List[int] = []
        heaps = TestHeaps(selector.config)

        def add(got: Tuple[int, TestHeaps]) -> None:
            n, task_heaps = got
            heaps.update(task_heaps, sum(counts))
            counts.append(n)

        jobs = (Job(index=i, read=t, seen_before=_seen(seen, i)) for i, t in enumerate(tasks))
        self.map(scan_job, "scan", jobs, add)
        if selector.config.test_per_region > 0:
            selector.choose(heaps)
        return counts

    # -- second pass -------------------------------------------------------------------------
    def run(self, jobs: Iterator[Job], outputs: OutputSet, shard_name: Names,
            holdout_name: Names, dtype, progress: Progress) -> Dict[str, float]:  # fmt: skip
        """Do ``jobs``; their pieces go to ``outputs`` in order. Returns counts and skipped."""
        counts: Dict[str, float] = collections.defaultdict(int)
        skipped: Dict[str, int] = collections.Counter()

        def join(result: JobResult) -> None:
            for (variant, region), piece in result.shards.items():
                writer = outputs.shard((variant, region), shard_name(variant, region), dtype)
                writer.append_shard(piece.path)
                outputs.remove_piece(piece.path, shard=True)
            for (split, region), piece in result.holdouts.items():
                writer = outputs.holdout((split, region), holdout_name(split, region))
                writer.append_file(piece.path, piece.documents)
                outputs.remove_piece(piece.path)
            for key in ("documents", "held_out", "text_bytes"):
                counts[key] += getattr(result, key)
            skipped.update(result.skipped)
            progress.update(result.documents, counts["text_bytes"])

        self.map(run_job, "run", jobs, join)
        counts["skipped"] = dict(skipped)  # type: ignore[assignment]
        return counts


def _seen(seen: Optional[List[FrozenSet[str]]], i: int) -> FrozenSet[str]:
    return seen[i] if seen is not None else frozenset()


def task_jobs(
    tasks: List[ReadTask],
    doc_counts: Optional[List[int]],
    selector: HoldoutSelector,
    part: Optional[Part],
    seen: Optional[List[FrozenSet[str]]] = None,
) -> Iterator[Job]:
    """The jobs of read tasks; with ``doc_counts`` (a first pass), positions and the part's share;
    with ``seen`` (NOW), the ids each task drops as repeats."""
    if doc_counts is None:
        for i, task in enumerate(tasks):
            yield Job(index=i, read=task, seen_before=_seen(seen, i))
        return
    test = sorted(selector.test_positions)
    lo, hi = (0, None) if part is None else part.bounds
    if part is not None and part.last:
        hi = None
    if part is not None and hi == 0:  # an empty part before any document
        return
    offset, k = 0, 0
    for i, (task, n) in enumerate(zip(tasks, doc_counts)):
        start = offset
        offset += n
        # Bad records after a task's last document belong to the next document: position start + n.
        if (hi is not None and start >= hi) or start + n < lo:
            continue
        while k < len(test) and test[k] < start:
            k += 1
        mine = []
        while k < len(test) and test[k] < start + n:
            mine.append(test[k] - start)
            k += 1
        yield Job(
            index=i,
            read=task,
            test=frozenset(mine),
            window=(max(lo - start, 0), None if hi is None else min(hi - start, n)),
            bad_window=(lo - start, None if hi is None else hi - start),
            seen_before=_seen(seen, i),
        )


def stream_jobs(
    positioned: Iterator[Tuple[int, Document]], selector: HoldoutSelector, job_bytes: int
) -> Iterator[Job]:
    """Jobs of documents the main process reads (formats without read tasks)."""
    test = selector.test_positions
    rows: List[tuple] = []
    mine: List[int] = []
    size, index = 0, 0
    for position, doc in positioned:
        if position in test:
            mine.append(len(rows))
        rows.append(DOC_FIELDS(doc))
        size += len(doc.text)
        if size >= job_bytes:
            yield Job(index=index, docs=rows, test=frozenset(mine))
            rows, mine, size, index = [], [], 0, index + 1
    if rows:
        yield Job(index=index, docs=rows, test=frozenset(mine))
