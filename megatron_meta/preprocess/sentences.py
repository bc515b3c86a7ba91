"""Offline sentence splitting for ``--split-sentences``.

nltk ships no punkt model and cannot download one here, so the punkt parameters are learned from
the corpus itself with nltk's unsupervised :class:`~nltk.tokenize.punkt.PunktTrainer` (that is what
punkt models are: abbreviation, collocation and sentence-starter statistics of a corpus).

Unlike Megatron-LM, which keeps only the sentence strings, :meth:`SentenceSplitter.split` returns
pieces that cover the text exactly: the whitespace between two sentences stays at the end of the
earlier one. Concatenating a document's sequences therefore gives back the formatted document
character for character, newlines included (so ``--keep-newlines`` is always in effect).
"""

from __future__ import annotations

import logging
from typing import Iterable, List

logger = logging.getLogger(__name__)

# Enough text for stable abbreviation statistics; training time grows linearly with it.
DEFAULT_TRAIN_CHARS = 2_000_000


def train_punkt(texts: Iterable[str], max_chars: int = DEFAULT_TRAIN_CHARS):
    """Learn punkt parameters from (up to ``max_chars`` of) ``texts``."""
    from nltk.tokenize.punkt import PunktTrainer

    parts: List[str] = []
    total = 0
    for text in texts:
        parts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    trainer = PunktTrainer()
    trainer.INCLUDE_ALL_COLLOCS = True
    trainer.train("\n\n".join(parts), finalize=True)
    params = trainer.get_params()
    logger.info(
        "learned punkt parameters from %d characters (%d abbreviations)",
        total,
        len(params.abbrev_types),
    )
    return params


class SentenceSplitter:
    """Splits text into sentence pieces whose concatenation is the text."""

    def __init__(self, params) -> None:
        from nltk.tokenize.punkt import PunktSentenceTokenizer

        self._tokenizer = PunktSentenceTokenizer(params)

    def split(self, text: str) -> List[str]:
        starts = [start for start, _ in self._tokenizer.span_tokenize(text)]
        if not starts:
            return [text]
        starts[0] = 0  # leading whitespace belongs to the first sentence
        bounds = starts + [len(text)]
        return [text[a:b] for a, b in zip(bounds, bounds[1:])]
