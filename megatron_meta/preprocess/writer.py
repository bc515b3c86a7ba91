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
from typing import IO, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from megatron_meta.corpora.records import Document
from megatron_meta.errors import DataError
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

    def append_shard(self, prefix: str, sidecar: Optional[str] = None) -> None:
        """Append a complete shard (``{prefix}.bin/.idx`` and its sidecar), in blocks.

        How the main process joins the workers' pieces and ``merge`` joins parts: the index is
        read through a memory map a block at a time, so memory stays flat however many documents
        the shard holds.
        """
        index = read_index(prefix + ".idx")
        if index.dtype != self.dtype:
            raise DataError(f"{prefix}.idx: token dtype {index.dtype}, expected {self.dtype}")
        with open(prefix + ".bin", "rb") as f:
            shutil.copyfileobj(f, self._streams["bin"], _BLOCK)
        for lo in range(0, index.sequences, _BLOCK):
            self._streams["lengths"].write(index.lengths[lo : lo + _BLOCK].tobytes())
        for lo in range(1, index.documents + 1, _BLOCK):
            ends = index.document_indices[lo : lo + _BLOCK] + self.sequences
            self._streams["docs"].write(ends.astype(np.int64, copy=False).tobytes())
        meta = np.load(sidecar or prefix + SIDECAR_SUFFIX, mmap_mode="r")
        if len(meta) != index.documents:
            raise DataError(f"{prefix}: sidecar has {len(meta)} counts for {index.documents} documents")
        for lo in range(0, len(meta), _BLOCK):
            self._streams["meta"].write(np.asarray(meta[lo : lo + _BLOCK], dtype=np.int32).tobytes())
        self.documents += index.documents
        self.sequences += index.sequences
        self.tokens += int(os.path.getsize(prefix + ".bin")) // self.dtype.itemsize

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


class ShardIndex(NamedTuple):
    """An ``.idx`` file's header and its arrays (memory-mapped views)."""

    dtype: np.dtype
    sequences: int
    documents: int
    lengths: np.ndarray
    """int32, one per sequence."""
    document_indices: np.ndarray
    """int64, ``documents + 1`` entries starting with 0."""


def read_index(path: str) -> ShardIndex:
    """Open an MMIDIDX ``.idx`` file without reading its arrays into memory."""
    codes = {code: dtype for dtype, code in DTYPE_CODES.items()}
    try:
        with open(path, "rb") as f:
            header = f.read(len(INDEX_MAGIC) + 8 + 1 + 8 + 8)
        magic, rest = header[: len(INDEX_MAGIC)], header[len(INDEX_MAGIC) :]
        version, code, sequences, documents = struct.unpack("<QBQQ", rest)
    except (OSError, struct.error) as e:
        raise DataError(f"cannot read shard index {path}: {e}") from e
    if magic != INDEX_MAGIC or version != INDEX_VERSION or code not in codes:
        raise DataError(f"{path}: not a megatron-core MMIDIDX index (version 1, uint16/int32)")
    offset = len(header)
    lengths = np.memmap(path, np.int32, "r", offset, (sequences,)) if sequences else np.zeros(0, np.int32)
    offset += 4 * sequences + 8 * sequences  # lengths, then the byte pointers
    doc_idx = np.memmap(path, np.int64, "r", offset, (documents,))
    return ShardIndex(codes[code], sequences, documents - 1, lengths, doc_idx)


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

    def append_file(self, path: str, documents: int) -> None:
        """Append a JSONL file of ``documents`` held-out records (a worker's piece, a part)."""
        self._file.flush()
        with open(path, "rb") as f:
            shutil.copyfileobj(f, self._file.buffer, _BLOCK)
        self.documents += documents

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
        self._pieces: Optional[str] = None

    def pieces_dir(self) -> str:
        """A folder of this run for the workers' pieces (joined, then removed, as they come)."""
        if self._pieces is None:
            self._pieces = _tmp(self.manifest_path[: -len(".manifest.json")] + ".pieces")
            os.makedirs(self._pieces)
        return self._pieces

    def remove_piece(self, path: str, shard: bool = False) -> None:
        """Delete a worker's piece once joined (a shard's three files, or one JSONL file)."""
        for p in [path + ".bin", path + ".idx", path + SIDECAR_SUFFIX] if shard else [path]:
            os.remove(p)

    def _remove_pieces(self) -> None:
        if self._pieces is not None:
            shutil.rmtree(self._pieces, ignore_errors=True)
            self._pieces = None

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
        self._remove_pieces()
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
        self._remove_pieces()
        for writer in list(self.shards.values()) + list(self.holdouts.values()):
            writer.close()
            for path in writer.temp_paths():
                if os.path.exists(path):
                    os.remove(path)
