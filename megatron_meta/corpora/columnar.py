"""Parquet files and Hugging Face ``datasets`` folders (``Dataset.save_to_disk``) as corpora.

Both are read with pyarrow, a record batch at a time (never the whole table), with the JSONL
reader's keys (``--json-keys``, ``--url-key``, ...) naming the columns and its per-record rules and
bad-record reasons (:func:`~megatron_meta.corpora.jsonl.record_to_document`). A record's location
is ``path:row N`` (1-based, counted over the file); a record without an id gets ``{file}:{row}``.

Units a worker can read alone (:mod:`~megatron_meta.corpora.ranges`): Parquet row groups, and the
record batches of a ``datasets`` arrow file (IPC stream, read through a memory map, so skipping the
batches before a range costs no copy).
"""

from __future__ import annotations

import json
import os
from typing import Iterator, List, Optional, Sequence, Tuple

from megatron_meta.corpora.bad_records import BadRecords
from megatron_meta.corpora.jsonl import JsonKeys, record_to_document
from megatron_meta.corpora.records import Document
from megatron_meta.errors import DataError
from megatron_meta.metadata.regions import RegionTable

BATCH_ROWS = 1024


def _columns(keys: JsonKeys, names: Sequence[str]) -> List[str]:
    wanted = [keys.text, keys.url, keys.country, keys.continent, keys.title, keys.id, keys.date]
    return [c for c in dict.fromkeys(wanted) if c and c in names]


def is_datasets_folder(path: str) -> bool:
    """A ``Dataset.save_to_disk`` folder (a ``DatasetDict`` has one such folder per split)."""
    return os.path.isfile(os.path.join(path, "state.json")) and os.path.isfile(
        os.path.join(path, "dataset_info.json")
    )


def datasets_arrow_files(folder: str) -> List[str]:
    """The arrow files of a ``save_to_disk`` folder, in the dataset's order."""
    if os.path.isfile(os.path.join(folder, "dataset_dict.json")):
        raise DataError(
            f"{folder} is a DatasetDict; pass one split's folder as --input (e.g. {folder}/train)"
        )
    try:
        with open(os.path.join(folder, "state.json"), encoding="utf-8") as f:
            state = json.load(f)
        files = [os.path.join(folder, d["filename"]) for d in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{folder}/state.json: not a datasets save_to_disk folder ({e})") from e
    for path in files:
        if not os.path.isfile(path):
            raise DataError(f"{folder}: arrow file {path} listed in state.json is missing")
    return files


# -- Parquet ----------------------------------------------------------------------------------
def _parquet_file(path: str):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"cannot read Parquet file {path}: {e}") from e


def parquet_row_groups(path: str) -> List[Tuple[int, int]]:
    """``(rows, bytes)`` of each row group of ``path``."""
    meta = _parquet_file(path).metadata
    return [(meta.row_group(i).num_rows, meta.row_group(i).total_byte_size) for i in range(meta.num_row_groups)]


def read_parquet(
    path: str,
    keys: JsonKeys,
    regions: RegionTable,
    bad: BadRecords,
    groups: Optional[Tuple[int, int]] = None,
) -> Iterator[Document]:
    """Documents of row groups ``[lo, hi)`` of ``path`` (``groups`` None: all of them)."""
    pf = _parquet_file(path)
    meta = pf.metadata
    lo, hi = groups or (0, meta.num_row_groups)
    first_row = sum(meta.row_group(i).num_rows for i in range(lo))
    columns = _columns(keys, pf.schema_arrow.names)
    batches = pf.iter_batches(batch_size=BATCH_ROWS, row_groups=list(range(lo, hi)), columns=columns)
    yield from _records(path, batches, first_row, keys, regions, bad)


# -- datasets arrow files ---------------------------------------------------------------------
def _arrow_stream(path: str):
    import pyarrow as pa

    try:
        return pa.ipc.open_stream(pa.memory_map(path, "r"))
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read arrow file {path}: {e}") from e


def arrow_batches(path: str) -> List[Tuple[int, int]]:
    """``(rows, bytes)`` of each record batch of a ``datasets`` arrow file."""
    return [(b.num_rows, b.nbytes) for b in _arrow_stream(path)]


def read_arrow(
    path: str,
    keys: JsonKeys,
    regions: RegionTable,
    bad: BadRecords,
    batches: Optional[Tuple[int, int]] = None,
) -> Iterator[Document]:
    """Documents of record batches ``[lo, hi)`` of a ``datasets`` arrow file (None: all)."""
    reader = _arrow_stream(path)
    lo, hi = batches or (0, None)
    columns = _columns(keys, reader.schema.names)

    def wanted() -> Iterator:
        nonlocal first_row
        for i, batch in enumerate(reader):
            if hi is not None and i >= hi:
                return
            if i < lo:
                first_row += batch.num_rows
                continue
            yield batch.select(columns)

    first_row = 0
    yield from _records(path, wanted(), None, keys, regions, bad, lambda: first_row)


def _records(path, batches, first_row, keys, regions, bad, first_row_fn=None) -> Iterator[Document]:
    name = os.path.basename(path.rstrip("/"))
    row = None
    try:
        for batch in batches:
            if row is None:  # the arrow reader knows its first row only once it has skipped
                row = first_row if first_row_fn is None else first_row_fn()
            for obj in batch.to_pylist():
                row += 1
                doc = record_to_document(obj, f"{path}:row {row}", f"{name}:{row}", keys, regions, bad)
                if doc is not None:
                    yield doc
    except (OSError, ValueError) as e:  # damaged file (pyarrow errors are OSError/ValueError)
        raise DataError(f"{path}: cannot read after row {row or 0}: {e}") from e
