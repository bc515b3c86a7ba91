"""Writing shards, sidecars and held-out JSONL under temporary names, renamed only on success.

:class:`ShardWriter` produces megatron-core's MMIDIDX ``.bin/.idx`` pair (the same bytes
``IndexedDatasetBuilder`` writes, checked in the tests) without holding the index in memory:
sequence lengths, document boundaries and metadata counts are streamed to temporary side files and
the ``.idx`` is assembled from them at the end, in blocks. Memory stays flat however many documents
a shard gets.

:class:`OutputSet` owns every file of a run. :meth:`OutputSet.commit` finalizes all of them, removes
a previous manifest, renames the data files into place and writes the manifest last; until then
only ``*.tmp-<pid>`` names exist, and :meth:`OutputSet.abort` removes them. A failed or interrupted
run therefore never leaves a ``.bin/.idx`` pair or a manifest that looks complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
from typing import IO, Dict, List, Optional, Tuple

import numpy as np

from megatron_meta.corpora.records import Document
from megatron_meta.preprocess.pipeline import EncodedVariant

logger = logging.getLogger(__name__)

INDEX_MAGIC = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
# megatron.core.datasets.indexed_dataset.DType codes
DTYPE_CODES = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}
SIDECAR_SUFFIX = ".metadata_tokens.npy"
_BLOCK = 1 << 20  # entries per block when assembling the index


def token_dtype(vocab_size: int) -> np.dtype:
    """megatron-core's choice: uint16 below 65,500 ids, int32 above."""
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


def _tmp(path: str) -> str:
    return f"{path}.tmp-{os.getpid()}"


class ShardWriter:
    """Streams one shard (``{prefix}.bin/.idx``) and its metadata-token sidecar."""

    def __init__(self, prefix: str, dtype: np.dtype) -> None:
        self.prefix = prefix
        self.dtype = np.dtype(dtype)
        if self.dtype not in DTYPE_CODES:
            raise ValueError(f"unsupported token dtype {self.dtype}")
        self.documents = 0
        self.sequences = 0
        self.tokens = 0
        self._streams: Dict[str, IO[bytes]] = {}
        for name in ("bin", "lengths", "docs", "meta"):
            self._streams[name] = open(_tmp(f"{prefix}.{name}"), "wb")

    @property
    def sidecar(self) -> str:
        return self.prefix + SIDECAR_SUFFIX

    def add(self, encoded: EncodedVariant) -> None:
        """Append a chunk of documents."""
        assert encoded.tokens.dtype == self.dtype, (encoded.tokens.dtype, self.dtype)
        self._streams["bin"].write(memoryview(encoded.tokens))
        self._streams["lengths"].write(
            encoded.sequence_lengths.astype(np.int32, copy=False).tobytes()
        )
        ends = self.sequences + np.cumsum(encoded.document_sequences, dtype=np.int64)
        self._streams["docs"].write(ends.tobytes())
        self._streams["meta"].write(encoded.metadata_tokens.astype(np.int32, copy=False).tobytes())
        self.documents += len(encoded.document_sequences)
        self.sequences += len(encoded.sequence_lengths)
        self.tokens += len(encoded.tokens)

    def finalize(self) -> List[Tuple[str, str]]:
        """Assemble ``.idx`` and the ``.npy`` sidecar under temporary names.

        Returns ``(temporary, final)`` path pairs for :class:`OutputSet` to rename.
        """
        for f in self._streams.values():
            f.close()
        idx_tmp = _tmp(self.prefix + ".idx")
        with open(idx_tmp, "wb") as out:
            out.write(INDEX_MAGIC)
            out.write(struct.pack("<Q", INDEX_VERSION))
            out.write(struct.pack("<B", DTYPE_CODES[self.dtype]))
            out.write(struct.pack("<Q", self.sequences))
            out.write(struct.pack("<Q", self.documents + 1))
            with open(_tmp(self.prefix + ".lengths"), "rb") as f:
                shutil.copyfileobj(f, out)
            self._write_pointers(out)
            out.write(np.zeros(1, dtype=np.int64).tobytes())  # document_indices start with 0
            with open(_tmp(self.prefix + ".docs"), "rb") as f:
                shutil.copyfileobj(f, out)
        npy_tmp = _tmp(self.sidecar)
        with open(npy_tmp, "wb") as out:
            header = {"descr": "<i4", "fortran_order": False, "shape": (self.documents,)}
            np.lib.format.write_array_header_1_0(out, header)
            with open(_tmp(self.prefix + ".meta"), "rb") as f:
                shutil.copyfileobj(f, out)
        for name in ("lengths", "docs", "meta"):
            os.remove(_tmp(f"{self.prefix}.{name}"))
        return [
            (_tmp(self.prefix + ".bin"), self.prefix + ".bin"),
            (idx_tmp, self.prefix + ".idx"),
            (npy_tmp, self.sidecar),
        ]

    def _write_pointers(self, out: IO[bytes]) -> None:
        """int64 byte offset of each sequence: exclusive running sum of lengths x itemsize."""
        itemsize = self.dtype.itemsize
        offset = 0
        with open(_tmp(self.prefix + ".lengths"), "rb") as f:
            while True:
                block = np.frombuffer(f.read(4 * _BLOCK), dtype=np.int32)
                if not len(block):
                    break
                sizes = block.astype(np.int64) * itemsize
                pointers = np.cumsum(sizes) - sizes + offset
                out.write(pointers.tobytes())
                offset += int(sizes.sum())

    def temp_paths(self) -> List[str]:
        names = ("bin", "lengths", "docs", "meta", "idx")
        return [_tmp(f"{self.prefix}.{n}") for n in names] + [_tmp(self.sidecar)]

    def close(self) -> None:
        for f in self._streams.values():
            f.close()


class HoldoutWriter:
    """Held-out documents as JSONL (``Document.to_json`` per line)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.documents = 0
        self._file = open(_tmp(path), "w", encoding="utf-8")

    def add(self, doc: Document) -> None:
        self._file.write(json.dumps(doc.to_json(), ensure_ascii=False))
        self._file.write("\n")
        self.documents += 1

    def finalize(self) -> List[Tuple[str, str]]:
        self._file.close()
        return [(_tmp(self.path), self.path)]

    def temp_paths(self) -> List[str]:
        return [_tmp(self.path)]

    def close(self) -> None:
        self._file.close()


class OutputSet:
    """All files of one preprocessing run; nothing is visible under its final name until commit."""

    def __init__(self, manifest_path: str) -> None:
        self.manifest_path = manifest_path
        self.shards: Dict[Tuple[str, Optional[str]], ShardWriter] = {}
        self.holdouts: Dict[Tuple[str, Optional[str]], HoldoutWriter] = {}

    def shard(self, key: Tuple[str, Optional[str]], prefix: str, dtype: np.dtype) -> ShardWriter:
        if key not in self.shards:
            self.shards[key] = ShardWriter(prefix, dtype)
        return self.shards[key]

    def holdout(self, key: Tuple[str, Optional[str]], path: str) -> HoldoutWriter:
        if key not in self.holdouts:
            self.holdouts[key] = HoldoutWriter(path)
        return self.holdouts[key]

    def commit(self, write_manifest_fn) -> None:
        """Finalize everything, rename into place, then call ``write_manifest_fn()`` last."""
        renames: List[Tuple[str, str]] = []
        for writer in list(self.shards.values()) + list(self.holdouts.values()):
            renames.extend(writer.finalize())
        # A stale manifest from an earlier run must not describe the files we are replacing.
        if os.path.exists(self.manifest_path):
            os.remove(self.manifest_path)
        for tmp, final in renames:
            os.replace(tmp, final)
        write_manifest_fn()

    def abort(self) -> None:
        """Close and delete every temporary file (used on errors and interrupts)."""
        for writer in list(self.shards.values()) + list(self.holdouts.values()):
            writer.close()
            for path in writer.temp_paths():
                if os.path.exists(path):
                    os.remove(path)
