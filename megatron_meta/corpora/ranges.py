"""Cutting a corpus into read tasks: pieces of the input that a worker process reads on its own.

A :class:`ReadTask` is a contiguous piece of the corpus's document order: a byte range of a plain
JSONL file (cut at line ends, with the line number it starts at), a whole ``.gz`` JSONL file, a
range of Parquet row groups, a range of record batches of a ``datasets`` arrow file, or one NOW
text file (its sources rows loaded once per process,
:func:`~megatron_meta.corpora.now.cached_corpus`).
The tasks in order read exactly the documents of one sequential read, with the same locations and
default ids, so how the input is cut changes nothing in the output. (NOW drops repeated text ids
corpus-wide; across tasks the caller does that, see ``Job.seen_before``.)

The embedded news corpus (one zip of a few thousand articles) has no tasks: :func:`plan_tasks`
returns None and the caller reads it sequentially.

Planning reads only metadata, except for plain JSONL: its line ends and line numbers are found by
one sequential read of the file in blocks (``bytes.count``, at disk speed: about 1/1000 of the
encoding's CPU time).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator, List, Optional

from megatron_meta.corpora.bad_records import BadRecords
from megatron_meta.corpora.records import Document
from megatron_meta.corpora.registry import CorpusSpec, now_corpus, resolve_format
from megatron_meta.errors import DataError

_BLOCK = 16 << 20


@dataclasses.dataclass(frozen=True)
class ReadTask:
    """One piece of the input (picklable: it travels to a worker)."""

    reader: str
    """``jsonl``, ``parquet``, ``arrow`` or ``now``."""
    path: str
    """The file (for NOW, its display name: ``zip!member`` or the path)."""
    start: int
    """First byte (jsonl), row group (parquet), record batch (arrow) or the index of the text
    file in the NOW corpus's reading order (now)."""
    end: Optional[int]
    """End (exclusive) in the same unit; None: to the end of the file."""
    first_line: int = 1
    """Line number of the line at ``start`` (jsonl)."""
    size: int = 0
    """Bytes, for progress and balance."""


def plan_tasks(
    spec: CorpusSpec, target_bytes: int, bad: Optional[BadRecords] = None
) -> Optional[List[ReadTask]]:
    """Tasks of about ``target_bytes`` each, in corpus order; None for formats without them.

    NOW: one task a text file; its sources rows are loaded here (bad rows counted in ``bad``).
    """
    fmt = resolve_format(spec)
    tasks: List[ReadTask] = []
    if fmt == "now":
        from megatron_meta.corpora.now import text_file_sizes

        corpus = now_corpus(spec, bad if bad is not None else BadRecords("skip", log_first=0))
        for i, (name, size) in enumerate(text_file_sizes(corpus)):
            tasks.append(ReadTask("now", name, i, i + 1, 1, size))
        return tasks
    if fmt == "jsonl":
        for path in spec.inputs:
            if path.endswith(".gz"):  # not seekable: one task a file
                tasks.append(ReadTask("jsonl", path, 0, None, 1, _size(path)))
            else:
                tasks.extend(_jsonl_ranges(path, target_bytes))
        return tasks
    if fmt == "parquet":
        from megatron_meta.corpora.columnar import parquet_row_groups

        for path in spec.inputs:
            tasks.extend(_grouped("parquet", path, parquet_row_groups(path), target_bytes))
        return tasks
    if fmt == "datasets":
        from megatron_meta.corpora.columnar import arrow_batches, datasets_arrow_files

        for folder in spec.inputs:
            for path in datasets_arrow_files(folder):
                tasks.extend(_grouped("arrow", path, arrow_batches(path), target_bytes))
        return tasks
    return None


def read_task(spec: CorpusSpec, task: ReadTask, bad: BadRecords) -> Iterator[Document]:
    """The documents of ``task`` (before the ``--countries`` filter, which the caller applies)."""
    if task.reader == "now":
        # The sources rows' bad records were counted by the main process, when it planned.
        corpus = now_corpus(spec, BadRecords("skip", log_first=0))
        return corpus.file_documents(corpus.texts[task.start], bad)
    regions = spec.regions()
    if task.reader == "jsonl":
        from megatron_meta.corpora.jsonl import read_jsonl_range

        return read_jsonl_range(
            task.path, spec.keys, regions, bad, task.start, task.end, task.first_line
        )
    units = (task.start, task.end)
    if task.reader == "parquet":
        from megatron_meta.corpora.columnar import read_parquet

        return read_parquet(task.path, spec.keys, regions, bad, units)
    from megatron_meta.corpora.columnar import read_arrow

    return read_arrow(task.path, spec.keys, regions, bad, units)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError as e:
        raise DataError(f"cannot read input file {path}: {e}") from e


def _jsonl_ranges(path: str, target: int) -> List[ReadTask]:
    """Byte ranges of about ``target`` bytes, each starting at a line start."""
    size = _size(path)
    out: List[ReadTask] = []
    start, line = 0, 1  # current range: first byte, its line number
    lines = 0  # newlines before ``pos``
    pos = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(_BLOCK)
            if not block:
                break
            i = 0
            # Cut after the first newline at or past start + target (within this block).
            while start + target <= pos + len(block) - 1:
                at = max(start + target - pos, i)
                nl = block.find(b"\n", at)
                if nl < 0:
                    break
                lines += block.count(b"\n", i, nl + 1)
                i = nl + 1
                end = pos + i
                out.append(ReadTask("jsonl", path, start, end, line, end - start))
                start, line = end, lines + 1
            lines += block.count(b"\n", i)
            pos += len(block)
    if start < size or not out:
        out.append(ReadTask("jsonl", path, start, None, line, size - start))
    return out


def _grouped(reader: str, path: str, units, target: int) -> List[ReadTask]:
    """Consecutive units (row groups, record batches) joined up to about ``target`` bytes."""
    out: List[ReadTask] = []
    lo, size = 0, 0
    for i, (_, nbytes) in enumerate(units):
        size += nbytes
        if size >= target:
            out.append(ReadTask(reader, path, lo, i + 1, 1, size))
            lo, size = i + 1, 0
    if lo < len(units) or not out:
        out.append(ReadTask(reader, path, lo, len(units), 1, size))
    return out
