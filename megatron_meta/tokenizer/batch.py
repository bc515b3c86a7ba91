"""Fast, exact encoding: batch calls into the tokenizer library underneath megatron-core.

:class:`BatchEncoder` encodes many texts per call through the library underneath the megatron-core
wrapper, and is checked against ``tokenizer.tokenize`` (the ids inference sees) on samples before
it is trusted; anything unrecognized encodes text by text through ``tokenize`` itself. When a
metadata block and its body may be encoded apart is decided in :mod:`megatron_meta.tokenizer.proofs`.
"""

from __future__ import annotations

import logging
from typing import Any, List, Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

Encoded = List[np.ndarray]


class LibraryEncoder:
    """Batch encoding straight on the tokenizer library (sentencepiece, tiktoken or tokenizers).

    Picklable and free of megatron-core and torch, so worker processes stay small. It reproduces
    what megatron-core's wrapper calls for one text; :meth:`BatchEncoder.verify` checks that on
    samples before it is used.
    """

    def __init__(self, kind: str, inner: Any, num_special: int = 0) -> None:
        self.kind = kind
        self.inner = inner
        self.num_special = num_special  # tiktoken: ids below this are megatron special tokens
        self._special_starts = (
            sorted({t[0] for t in inner.special_tokens_set if t})
            if kind == "tiktoken-batch"
            else []
        )

    def __call__(self, texts: List[str]) -> Encoded:
        if self.kind == "sentencepiece-batch":
            try:
                return self.inner.encode(texts, num_threads=1, return_type="numpy")
            except (TypeError, ValueError):  # sentencepiece < 0.2.1: lists only
                return [
                    np.asarray(i, dtype=np.int32) for i in self.inner.encode(texts, num_threads=1)
                ]
        if self.kind == "tiktoken-batch":
            # megatron-core encodes with allowed_special="all"; a text holding none of the special
            # tokens' first characters (all "<") encodes the same without the special-token scan.
            # A plain loop: tiktoken's encode_batch adds a thread pool per call (measured 3x the
            # CPU of this loop at num_threads=1).
            starts, inner = self._special_starts, self.inner
            return [
                np.asarray(
                    inner.encode(t, allowed_special="all")
                    if any(c in t for c in starts)
                    else inner.encode_ordinary(t),
                    dtype=np.int32,
                )
                for t in texts
            ]
        # encode_batch_fast (tokenizers >= 0.21) skips the character offsets we never read.
        encode = getattr(self.inner, "encode_batch_fast", None) or self.inner.encode_batch
        return [np.asarray(e.ids, dtype=np.int32) for e in encode(texts, add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids]
        if self.kind == "sentencepiece-batch":
            return self.inner.decode(ids)
        if self.kind == "tiktoken-batch":
            return self.inner.decode([i for i in ids if i >= self.num_special])
        return self.inner.decode(ids, skip_special_tokens=True)


def library_encoder(tokenizer) -> Optional[LibraryEncoder]:
    """The :class:`LibraryEncoder` equivalent of ``tokenizer.tokenize``, or None if unknown."""
    library = getattr(tokenizer, "library", "")
    inner = getattr(tokenizer, "_tokenizer", None)
    if inner is None:
        return None
    if library == "sentencepiece" and not inner.legacy:
        if inner.removed_extra_spaces and not inner.ignore_extra_whitespaces:
            return None  # megatron rewrites spaces before encoding
        return LibraryEncoder("sentencepiece-batch", inner.tokenizer)
    if library == "tiktoken":
        return LibraryEncoder("tiktoken-batch", inner.tokenizer, inner.num_special_tokens)
    if library == "huggingface" and not inner.include_special_tokens:
        backend = getattr(inner.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            return LibraryEncoder("hf-batch", backend)
    return None


class BatchEncoder:
    """Encodes a list of texts to int32 arrays, exactly as ``tokenizer.tokenize`` would.

    Attributes:
        kind: Which path is used (``sentencepiece-batch``, ``tiktoken-batch``, ``hf-batch`` or
            ``per-text``), for logs and the benchmark.
        library: The :class:`LibraryEncoder` in use, None when encoding text by text.
    """

    def __init__(self, tokenizer, fast: bool = True) -> None:
        self.tokenizer = tokenizer
        self.library = library_encoder(tokenizer) if fast else None
        self.kind = self.library.kind if self.library is not None else "per-text"

    def __call__(self, texts: Sequence[str]) -> Encoded:
        if self.library is not None:
            return self.library(list(texts))
        return [np.asarray(self.tokenizer.tokenize(t), dtype=np.int32) for t in texts]

    def verify(self, texts: Sequence[str]) -> bool:
        """Compare with ``tokenize`` on ``texts``; on a difference, use ``tokenize`` from now on."""
        if self.library is None or not texts:
            return True
        for text, ids in zip(texts, self.library(list(texts))):
            if ids.tolist() != list(self.tokenizer.tokenize(text)):
                logger.warning(
                    "batch encoding (%s) differs from tokenize() on %r...; encoding text by text",
                    self.kind,
                    text[:60],
                )
                self.library, self.kind = None, "per-text"
                return False
        return True
