"""Encoding a chunk of documents into token arrays for every metadata variant (worker side).

A worker encodes a chunk of documents of one region into, per variant, one flat token array plus
the sequence lengths and metadata-token counts, which it appends to its piece of the shard.

Two ways to build the ids of ``format_document(doc, variant)``:

* shared (when :func:`~megatron_meta.tokenizer.proofs.sharing_plan` gives a plan and the start-up
  check agrees): the body is tokenized once for all variants and each variant's ids are the ids
  of its metadata pieces followed by the body's (:mod:`~megatron_meta.preprocess.pieces`);
* whole-text otherwise: all variants' full texts of a chunk are tokenized, one batch call each.

The metadata-token count of a document is the number of tokens before the body (the ``TITLE:``
token, or ``CONTENT:`` for an untitled document); with ``--prepend-bos`` the BOS token is one of
them (it comes before the metadata block).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from megatron_meta.corpora.records import Document
from megatron_meta.metadata.formatting import (
    CONTENT_MARKER,
    VARIANTS,
    document_body,
    metadata_prefix,
)
from megatron_meta.preprocess.pieces import PieceEncoder
from megatron_meta.tokenizer.batch import LibraryEncoder
from megatron_meta.tokenizer.proofs import SharePlan

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class EncoderConfig:
    """What a worker needs to encode documents (picklable; sent once per worker)."""

    tokenizer_type: str
    """Megatron-LM ``--tokenizer-type``."""
    tokenizer_model: str
    """``--tokenizer-model`` path."""
    variants: List[str]
    """Metadata variants to write, in order."""
    url_form: str = "full"
    """``full`` or ``domain`` (MeCo)."""
    append_eod: bool = False
    """Append the tokenizer's EOD id to each document."""
    shared_body: Optional[SharePlan] = None
    """How to tokenize the body once for all variants (only when proven and checked); None
    encodes each variant's full text."""

    dtype: str = "int32"
    """numpy dtype name of the shard tokens (``uint16`` below 65,500 ids)."""
    punkt_params: Optional[Any] = None
    """Punkt parameters for ``--split-sentences``; None writes one sequence a document."""
    eod_id: int = -1
    """The tokenizer's end-of-document id (used with ``append_eod``)."""
    prepend_bos: bool = False
    """Put the tokenizer's BOS id before each document (the paper's protocol: BOS, no EOS)."""
    bos_id: int = -1
    """The tokenizer's BOS id (used with ``prepend_bos``)."""
    library: Optional[LibraryEncoder] = None
    """Batch encoder on the tokenizer library, checked against ``tokenize`` at start-up; None
    encodes text by text through ``tokenize`` (the tokenizer loaded in each worker)."""


@dataclasses.dataclass
class EncodedVariant:
    """One variant's ids for a chunk of documents."""

    tokens: np.ndarray
    """All ids, documents in order, in the shard dtype."""
    sequence_lengths: np.ndarray
    """int32, one per sequence (one per document unless sentences are split)."""
    document_sequences: np.ndarray
    """int32, sequences per document."""
    metadata_tokens: np.ndarray
    """int32, tokens before the body, per document."""


def _concat(parts: Sequence[np.ndarray], dtype: np.dtype) -> np.ndarray:
    if not parts:
        return np.zeros(0, dtype=dtype)
    # One copy straight into the shard dtype (ids are below the vocabulary size, so it fits).
    return np.concatenate(parts, dtype=dtype, casting="unsafe")


class DocumentEncoder:
    """Turns documents into per-variant token arrays with one tokenizer instance."""

    def __init__(self, config: EncoderConfig, tokenizer=None) -> None:
        self.config = config
        self.encode_batch: Callable[[List[str]], List[np.ndarray]]
        if config.library is not None:
            # Workers get here without importing megatron-core or torch: small processes.
            self.encode_batch, self._decode = config.library, config.library.decode
        else:
            from megatron_meta.tokenizer import decode
            from megatron_meta.tokenizer.batch import BatchEncoder
            from megatron_meta.tokenizer.load import load_tokenizer_fast

            # The same loader as the main process, so both encode with the same tokenize().
            tokenizer = tokenizer or load_tokenizer_fast(
                config.tokenizer_type, config.tokenizer_model
            )
            self.encode_batch = BatchEncoder(tokenizer, fast=False)
            self._decode = functools.partial(decode, tokenizer)
        self.dtype = np.dtype(config.dtype)
        self._eod = np.asarray([config.eod_id] if config.append_eod else [], dtype=np.int32)
        self._bos = np.asarray([config.bos_id], dtype=np.int32) if config.prepend_bos else None
        self._pieces = (
            PieceEncoder(config.shared_body, self.encode_batch, config.url_form)
            if config.shared_body
            else None
        )
        self._splitter = None
        if config.punkt_params is not None:
            from megatron_meta.preprocess.sentences import SentenceSplitter

            self._splitter = SentenceSplitter(config.punkt_params)

    # -- text pieces -------------------------------------------------------------------------
    def _sequences(self, doc: Document) -> List[str]:
        """The body cut into sequence texts (one, or one per sentence of the content)."""
        body = document_body(doc)
        if self._splitter is None:
            return [body]
        head = body[: body.index(CONTENT_MARKER) + len(CONTENT_MARKER)]
        pieces = self._splitter.split(doc.text)
        return [head + pieces[0]] + pieces[1:]

    # -- encoding ----------------------------------------------------------------------------
    def encode(self, docs: Sequence[Document]) -> Dict[str, EncodedVariant]:
        """Per-variant ids of ``docs``."""
        sequences = [self._sequences(doc) for doc in docs]
        counts = np.asarray([len(s) for s in sequences], dtype=np.int32)
        flat = [text for seqs in sequences for text in seqs]
        if self.config.shared_body:
            return self._encode_shared(docs, flat, counts)
        return self._encode_whole(docs, flat, counts)

    def _assemble(
        self, prefixes: List[np.ndarray], seq_ids: List[np.ndarray], counts: np.ndarray
    ) -> EncodedVariant:
        """Interleave per-document prefix ids with the body sequences (+ EOD) into one array."""
        parts: List[np.ndarray] = []
        lengths = np.fromiter((len(ids) for ids in seq_ids), dtype=np.int32, count=len(seq_ids))
        first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        meta = np.fromiter((len(p) for p in prefixes), dtype=np.int32, count=len(prefixes))
        eod = len(self._eod)
        bos = self._bos
        if bos is not None:  # BOS opens the document, before its metadata block
            meta += 1
        for d, start in enumerate(first):
            end = start + counts[d]
            if bos is not None:
                parts.append(bos)
            parts.append(prefixes[d])
            parts.extend(seq_ids[start:end])
            if eod:
                parts.append(self._eod)
        lengths[first] += meta  # the prefix belongs to the document's first sequence
        if eod:
            lengths[first + counts - 1] += eod
        return EncodedVariant(_concat(parts, self.dtype), lengths, counts, meta)

    def _encode_shared(
        self, docs: Sequence[Document], flat: List[str], counts: np.ndarray
    ) -> Dict[str, EncodedVariant]:
        first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        cutter = self._pieces
        assert cutter is not None
        variants = self.config.variants
        guarded = [cutter.guarded(doc, variants) for doc in docs]
        firsts = set(first.tolist())
        # Sequences after the first are whole texts of their own in both ways of encoding.
        rest_idx = [i for i in range(len(flat)) if i not in firsts]
        seq_ids: List[Optional[np.ndarray]] = [None] * len(flat)
        for i, ids in zip(rest_idx, self.encode_batch([flat[i] for i in rest_idx])):
            seq_ids[i] = ids
        open_docs = [d for d in range(len(docs)) if not guarded[d]]
        with_meta = any(VARIANTS[v] for v in variants)
        at_start = any(not VARIANTS[v] for v in variants)
        bodies = cutter.bodies([flat[first[d]] for d in open_docs], with_meta, at_start)
        prefixes = cutter.prefixes([docs[d] for d in open_docs], variants)
        whole = {}
        closed = [d for d in range(len(docs)) if guarded[d]]
        if closed:
            whole = self._whole_first([docs[d] for d in closed], [flat[first[d]] for d in closed])
        out: Dict[str, EncodedVariant] = {}
        for variant in variants:
            place = "start" if not VARIANTS[variant] else "after"
            pre: List[np.ndarray] = [None] * len(docs)  # type: ignore[list-item]
            seqs = list(seq_ids)
            for k, d in enumerate(open_docs):
                pre[d] = prefixes[variant][k]
                seqs[first[d]] = bodies[place][k]
            for k, d in enumerate(closed):
                pre[d], seqs[first[d]] = whole[variant][0][k], whole[variant][1][k]
            out[variant] = self._assemble(pre, seqs, counts)
        return out

    def _whole_first(
        self, docs: Sequence[Document], first_texts: List[str]
    ) -> Dict[str, Tuple[List[np.ndarray], List[np.ndarray]]]:
        """Per variant, (metadata ids, first-sequence ids) of each document's whole first text.

        All variants' texts (and their metadata blocks alone, for the sidecar count) go to the
        library in one batch call.
        """
        empty = np.zeros(0, dtype=np.int32)
        variants = self.config.variants
        blocks = {v: [metadata_prefix(d, v, self.config.url_form) for d in docs] for v in variants}
        texts = [p + t for v in variants for p, t in zip(blocks[v], first_texts)]
        texts += [p for v in variants if VARIANTS[v] for p in blocks[v]]
        encoded = iter(self.encode_batch(texts))
        wholes = {v: [next(encoded) for _ in docs] for v in variants}
        out = {}
        for variant in variants:
            alone = [next(encoded) for _ in docs] if VARIANTS[variant] else [empty] * len(docs)
            prefixes: List[np.ndarray] = []
            bodies: List[np.ndarray] = []
            for d, ids in enumerate(wholes[variant]):
                n = self._count_metadata(ids, blocks[variant][d], alone[d])
                # The split point is only for the sidecar count; the ids stay the whole-text ids.
                prefixes.append(ids[:n] if n else empty)
                bodies.append(ids[n:])
            out[variant] = (prefixes, bodies)
        return out

    def _encode_whole(
        self, docs: Sequence[Document], flat: List[str], counts: np.ndarray
    ) -> Dict[str, EncodedVariant]:
        first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        firsts = set(first.tolist())
        rest_idx = [i for i in range(len(flat)) if i not in firsts]
        seq_ids: List[Optional[np.ndarray]] = [None] * len(flat)
        for i, ids in zip(rest_idx, self.encode_batch([flat[i] for i in rest_idx])):
            seq_ids[i] = ids
        whole = self._whole_first(docs, [flat[f] for f in first])
        out: Dict[str, EncodedVariant] = {}
        for variant in self.config.variants:
            prefixes, bodies = whole[variant]
            for d, f in enumerate(first):
                seq_ids[f] = bodies[d]
            out[variant] = self._assemble(prefixes, list(seq_ids), counts)
        return out

    def _count_metadata(self, ids: np.ndarray, prefix: str, guess: np.ndarray) -> int:
        """Tokens that lie entirely within ``prefix`` (the tokens before the ``TITLE:`` token).

        ``guess`` is the encoding of ``prefix`` alone, right whenever no token straddles the end
        of the prefix; otherwise the count is found by decoding.
        """
        if not prefix:
            return 0
        n = len(guess)
        if n <= len(ids) and np.array_equal(ids[:n], guess):
            return n
        # A token crosses the boundary: take the longest run of ids that decodes inside it.
        lo, hi = 0, min(len(ids), n + 8)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if prefix.startswith(self._decode(ids[:mid])):
                lo = mid
            else:
                hi = mid - 1
        return lo
