"""A held-out document in metadata variants as token ids to score, the way both training's
validation and ``megatron-meta evaluate`` score it: ``[EOD] + ids``, the loss counted from the
``TITLE:`` token on, every variant truncated to the same body tokens.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Dict, List, Optional, Sequence

from megatron_meta.corpora.records import Document
from megatron_meta.metadata.formatting import format_document, metadata_prefix


@dataclasses.dataclass(frozen=True)
class Codec:
    """The tokenizer operations scoring needs."""

    tokenize: Callable[[str], List[int]]
    detokenize: Callable[[List[int]], str]
    eod: int

    @classmethod
    def of(cls, tokenizer) -> "Codec":
        """From a megatron-core tokenizer, decoding exactly (tiktoken's own is lossy)."""
        from megatron_meta.tokenizer.load import decode

        return cls(tokenizer.tokenize, functools.partial(decode, tokenizer), tokenizer.eod)


def loss_start(detokenize: Callable[[List[int]], str], ids: Sequence[int], char_start: int) -> int:
    """Index of the token that holds character ``char_start`` of the decoded text.

    Works for any tokenizer that decodes a prefix of the ids to a prefix of the text: the answer is
    the largest ``k`` whose decoded prefix ``ids[:k]`` is at most ``char_start`` characters long,
    found by bisection. A token spanning the boundary (``"\\n\\nTITLE"``) counts as the first
    body token, so no body character is ever left unscored.
    """
    if char_start <= 0:
        return 0
    lo, hi = 0, len(ids)  # invariant: len(decode(ids[:lo])) <= char_start
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(detokenize(list(ids[:mid]))) <= char_start:
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclasses.dataclass
class Encoded:
    """One document in one variant, ready for scoring."""

    sequence: List[int]
    """``[eod] + ids``, cut so the model sees at most ``seq_length`` positions."""
    start: int
    """Index in ``sequence`` of the first scored token (the ``TITLE:`` token)."""


def encode_variants(
    doc: Document, variants: Sequence[str], url_form: str, codec: Codec, seq_length: int
) -> Optional[Dict[str, Encoded]]:
    """``doc`` in every variant, truncated so that all variants score the same body tokens.

    The body is cut at ``seq_length`` minus the longest variant's metadata, so the longest
    formatted sequence fits ``seq_length`` and the shorter ones keep exactly as much body; a
    metadata variant is thus never scored on less text than ``none``. None when the metadata
    alone fills ``seq_length``.
    """
    encoded = {}
    for variant in variants:
        ids = list(codec.tokenize(format_document(doc, variant, url_form)))
        start = loss_start(codec.detokenize, ids, len(metadata_prefix(doc, variant, url_form)))
        encoded[variant] = (ids, start)
    body = seq_length - max(start for _, start in encoded.values())
    if body < 1:
        return None
    return {
        v: Encoded([codec.eod] + ids[: start + body], start + 1)
        for v, (ids, start) in encoded.items()
    }
