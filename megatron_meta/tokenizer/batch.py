"""Fast, exact encoding: batch calls into the tokenizer library, and when a shared body is safe.

:class:`BatchEncoder` encodes many texts per call through the library underneath the megatron-core
wrapper, and is checked against ``tokenizer.tokenize`` (the ids inference sees) on samples before
it is trusted; anything unrecognized encodes text by text through ``tokenize`` itself.

:func:`prefix_split_proof` says whether ``encode(a + b) == encode(a) + encode(b)`` whenever ``a``
ends in ``"\\n"`` and ``b`` starts with a non-space character. A metadata prefix ends in
``"\\n\\n"`` and its body starts with ``"TITLE: "`` or ``"CONTENT: "``, so preprocessing may then
tokenize the body once for all variants (and cut texts at such newlines). It only answers yes with
an argument that holds for all texts, not just a sample:

* SentencePiece BPE with an identity normalizer, no dummy prefix, no whitespace collapsing and
  ``"\\n"`` a user-defined piece that no other piece contains: ``"\\n"`` is then an atomic symbol
  no merge can cross, and BPE merges on either side of it are independent (merge order within a
  side is kept: ties break by position, which a shift does not change). Unigram models are *not*
  safe: Viterbi sums float scores from the start of the text, and near-ties resolve differently
  when a prefix is added (seen on the news corpus: ``▁Fu|n`` vs ``▁F|un``).
* Regex pre-tokenized byte-level BPE (tiktoken, Hugging Face ``Split`` + ``ByteLevel``) whose
  pattern is one of :data:`NEWLINE_SAFE_PATTERNS`. In those patterns every alternative that can
  match ``"\\n"`` can only continue with more whitespace, and no alternative that matches a
  non-space character can start with ``"\\n"`` (their optional leading characters exclude
  ``\\r\\n``); so no pre-token spans ``"\\n"`` + non-space, the cut is a pre-token boundary in the
  whole text (the greedy newline alternative ends there with or without what follows), and BPE
  never merges across pre-tokens. GPT-2's pattern is not in the
  list: its ``\\s+(?!\\S)`` makes ``"\\n\\n"`` one pre-token at the end of a prefix but two before
  ``TITLE``.
"""

from __future__ import annotations

import json
import logging
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)

# Pre-tokenizer patterns checked by hand (see module docstring). Llama-3 / cl100k, and the two
# patterns of megatron-core's TikTokenTokenizer.
NEWLINE_SAFE_PATTERNS = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+",
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"
    r"|\s*[\r\n]|\s+(?!\S)|\s+",
    r"[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*"
    "|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
)

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

    def __call__(self, texts: List[str]) -> Encoded:
        if self.kind == "sentencepiece-batch":
            try:
                return self.inner.encode(texts, num_threads=1, return_type="numpy")
            except (TypeError, ValueError):  # sentencepiece < 0.2.1: lists only
                return [
                    np.asarray(i, dtype=np.int32) for i in self.inner.encode(texts, num_threads=1)
                ]
        if self.kind == "tiktoken-batch":
            batches = self.inner.encode_batch(texts, num_threads=1, allowed_special="all")
            return [np.asarray(ids, dtype=np.int32) for ids in batches]
        return [
            np.asarray(e.ids, dtype=np.int32)
            for e in self.inner.encode_batch(texts, add_special_tokens=False)
        ]

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


def prefix_split_proof(tokenizer) -> Tuple[bool, str]:
    """(safe, reason): may a ``...\\n\\n`` prefix and its body be encoded separately?"""
    library = getattr(tokenizer, "library", "")
    inner = getattr(tokenizer, "_tokenizer", None)
    if inner is None:
        return False, f"unknown tokenizer library {library!r}"
    if library == "sentencepiece":
        return _sentencepiece_proof(inner)
    if library == "tiktoken":
        special_nl = [t for t in inner.special_tokens if "\n" in t]
        if special_nl:
            return False, f"special tokens contain a newline: {special_nl[:3]}"
        if inner.tokenizer._pat_str not in NEWLINE_SAFE_PATTERNS:
            return False, "tiktoken pattern is not one of the newline-safe patterns"
        return True, "tiktoken: regex pre-tokens never span a newline + non-space character"
    if library == "huggingface":
        return _huggingface_proof(inner)
    return False, f"no proof for tokenizer library {library!r}"


def _sentencepiece_proof(inner) -> Tuple[bool, str]:
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    if inner.legacy or (inner.removed_extra_spaces and not inner.ignore_extra_whitespaces):
        return False, "megatron-core rewrites the text before SentencePiece (legacy/extra spaces)"
    proto = model_pb2.ModelProto()
    proto.ParseFromString(inner.tokenizer.serialized_model_proto())
    norm = proto.normalizer_spec
    if proto.trainer_spec.model_type != model_pb2.TrainerSpec.BPE:
        return False, "SentencePiece model is not BPE (unigram Viterbi is not position-independent)"
    if norm.precompiled_charsmap or norm.name not in ("identity", ""):
        return False, f"SentencePiece normalizer {norm.name!r} is not identity"
    if norm.add_dummy_prefix or norm.remove_extra_whitespaces:
        return False, "SentencePiece adds a dummy prefix or collapses whitespace"
    newline_pieces = [p for p in proto.pieces if "\n" in p.piece]
    user_defined = model_pb2.ModelProto.SentencePiece.USER_DEFINED
    if [(p.piece, p.type) for p in newline_pieces] != [("\n", user_defined)]:
        return (
            False,
            "'\\n' is not a single user-defined piece (train with megatron-meta train-tokenizer)",
        )
    return True, "SentencePiece BPE with '\\n' as an atomic user-defined piece"


def _huggingface_proof(inner) -> Tuple[bool, str]:
    backend = getattr(inner.tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False, "not a fast (Rust) Hugging Face tokenizer"
    spec = json.loads(backend.to_str())
    if spec.get("normalizer") is not None:
        return False, "Hugging Face tokenizer has a normalizer"
    if (spec.get("model") or {}).get("type") != "BPE":
        return False, "Hugging Face tokenizer model is not BPE"
    if any("\n" in t.get("content", "") for t in spec.get("added_tokens", [])):
        return False, "an added token contains a newline"
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    if not steps or steps[0].get("type") != "Split":
        return False, "pre-tokenizer does not start with a regex Split"
    first = steps[0]
    pattern = (first.get("pattern") or {}).get("Regex")
    if (
        pattern not in NEWLINE_SAFE_PATTERNS
        or first.get("invert")
        or first.get("behavior") != "Isolated"
    ):
        return False, "pre-tokenizer regex is not one of the newline-safe patterns"
    for step in steps[1:]:
        if step.get("type") != "ByteLevel" or step.get("use_regex") or step.get("add_prefix_space"):
            return False, f"pre-tokenizer step {step.get('type')} may act across the boundary"
    return True, "Hugging Face byte-level BPE with a newline-safe Split pattern"
