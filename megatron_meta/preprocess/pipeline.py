"""Encoding a chunk of documents into token arrays for every metadata variant (worker side).

A worker receives a list of documents of one region and returns, per variant, one flat token array
plus the sequence lengths and metadata-token counts, so the main process only appends bytes.

Two ways to build the ids of ``format_document(doc, variant)``:

* shared (when :func:`~megatron_meta.tokenizer.batch.prefix_split_proof` holds): the body is
  tokenized once for all variants and each variant's ids are ``ids(metadata lines) + ids(body)``.
  The metadata block is itself cut at its newlines (``"URL: u\\n"``, ``"COUNTRY: cc\\n"``, the last
  line with ``"\\n\\n"``): every cut is a newline followed by a letter, the case the proof covers.
  Country and continent lines take few values and are cached.
* whole-text otherwise: each variant's full text is tokenized.

The metadata-token count of a document is the number of tokens before the body (the ``TITLE:``
token, or ``CONTENT:`` for an untitled document).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from megatron_meta.corpora.records import Document
from megatron_meta.metadata.formatting import (
    CONTENT_MARKER,
    VARIANTS,
    document_body,
    metadata_prefix,
    url_domain,
)
from megatron_meta.tokenizer.batch import LibraryEncoder

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
    shared_body: bool = False
    """Tokenize the body once for all variants (only when proven and checked)."""

    dtype: str = "int32"
    """numpy dtype name of the shard tokens (``uint16`` below 65,500 ids)."""
    punkt_params: Optional[Any] = None
    """Punkt parameters for ``--split-sentences``; None writes one sequence a document."""
    eod_id: int = -1
    """The tokenizer's end-of-document id (used with ``append_eod``)."""
    library: Optional[LibraryEncoder] = None
    """Batch encoder on the tokenizer library, checked against megatron-core's ``tokenize`` at
    start-up; None encodes text by text through megatron-core (loaded in each worker)."""


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
            from megatron_meta.tokenizer import decode, load_tokenizer
            from megatron_meta.tokenizer.batch import BatchEncoder

            tokenizer = tokenizer or load_tokenizer(config.tokenizer_type, config.tokenizer_model)
            self.encode_batch = BatchEncoder(tokenizer, fast=False)
            self._decode = functools.partial(decode, tokenizer)
        self.dtype = np.dtype(config.dtype)
        self._eod = np.asarray([config.eod_id] if config.append_eod else [], dtype=np.int32)
        self._line_cache: Dict[str, np.ndarray] = {}
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

    def _metadata_lines(self, doc: Document, variant: str) -> List[str]:
        """The metadata block of ``variant`` cut after each newline but the last blank line."""
        fields = VARIANTS[variant]
        values = {
            "URL": url_domain(doc.url) if self.config.url_form == "domain" else doc.url,
            "COUNTRY": doc.country,
            "CONTINENT": doc.continent,
        }
        lines = [f"{name}: {values[name]}\n" for name in fields]
        if lines:
            lines[-1] += "\n"
        return lines

    # -- encoding ----------------------------------------------------------------------------
    def _line_ids(self, lines: List[str]) -> Dict[str, np.ndarray]:
        """ids of metadata lines, with one batch call for all that are not cached.

        COUNTRY/CONTINENT lines take few values and stay cached; URL lines are unique per
        document and are kept only for the chunk at hand.
        """
        table: Dict[str, np.ndarray] = {}
        missing: List[str] = []
        for line in lines:
            if line in table:
                continue
            cached = self._line_cache.get(line)
            table[line] = cached
            if cached is None:
                missing.append(line)
        if missing:
            if len(self._line_cache) > 100_000:  # only reachable with unusual metadata values
                self._line_cache.clear()
            for line, ids in zip(missing, self.encode_batch(missing)):
                table[line] = ids
                if not line.startswith("URL: "):
                    self._line_cache[line] = ids
        return table

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
        for d, start in enumerate(first):
            end = start + counts[d]
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
        seq_ids = self.encode_batch(flat)
        lines = {v: [self._metadata_lines(d, v) for d in docs] for v in self.config.variants}
        table = self._line_ids([x for per_doc in lines.values() for ls in per_doc for x in ls])
        empty = np.zeros(0, dtype=np.int32)
        out: Dict[str, EncodedVariant] = {}
        for variant in self.config.variants:
            prefixes = [
                np.concatenate([table[x] for x in ls])
                if len(ls) > 1
                else (table[ls[0]] if ls else empty)
                for ls in lines[variant]
            ]
            out[variant] = self._assemble(prefixes, seq_ids, counts)
        return out

    def _encode_whole(
        self, docs: Sequence[Document], flat: List[str], counts: np.ndarray
    ) -> Dict[str, EncodedVariant]:
        first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        firsts = set(first.tolist())
        rest_idx = [i for i in range(len(flat)) if i not in firsts]
        rest_ids = dict(zip(rest_idx, self.encode_batch([flat[i] for i in rest_idx])))
        out: Dict[str, EncodedVariant] = {}
        empty = np.zeros(0, dtype=np.int32)
        for variant in self.config.variants:
            prefixes_text = [metadata_prefix(doc, variant, self.config.url_form) for doc in docs]
            whole = self.encode_batch([p + flat[f] for p, f in zip(prefixes_text, first)])
            alone = self.encode_batch(prefixes_text) if VARIANTS[variant] else [empty] * len(docs)
            seq_ids: List[np.ndarray] = []
            prefixes: List[np.ndarray] = []
            for d, ids in enumerate(whole):
                n = self._count_metadata(ids, prefixes_text[d], alone[d])
                # The split point is only for the sidecar count; the ids stay the whole-text ids.
                prefixes.append(ids[:n] if n else empty)
                seq_ids.append(ids[n:])
                seq_ids.extend(rest_ids[i] for i in range(first[d] + 1, first[d] + counts[d]))
            out[variant] = self._assemble(prefixes, seq_ids, counts)
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


# -- worker process glue ----------------------------------------------------------------------
# One encoder per worker process, built by the pool initializer (the usual Pool pattern).
_WORKER: Optional[DocumentEncoder] = None


def init_worker_from_queue(configs) -> None:
    """Pool initializer: wait for this worker's :class:`EncoderConfig` on ``configs``."""
    import signal

    # Ctrl-C is handled by the main process, which terminates the pool and removes temp files.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _WORKER
    _WORKER = DocumentEncoder(configs.get())


def encode_chunk(task):
    """Pool task: ``(key, document field tuples)`` -> ``(key, {variant: EncodedVariant})``."""
    key, rows = task
    assert _WORKER is not None, "init_worker was not called"
    return key, _WORKER.encode([Document(*row) for row in rows])
