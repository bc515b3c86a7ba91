"""Reading the chosen option out of a generated answer (the authors' generation protocol).

In order: a leading letter (``B``, ``(B)``, ``B: Lagos``), a stated letter (``the answer is B``,
``Option C``), the text of exactly one option, and a single distinct letter written as a label
(``... C.``). Anything else is unparseable (``None``), counted and reported, never guessed.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

LETTERS = "ABCD"
_LEADING = re.compile(r"^\W*\(?([A-D])\)?(?=[\s:.)\-,]|$)")
_STATED = re.compile(r"\b(?:answer|option|choice)\s*(?:is|would be|:)?\s*[:\-]?\s*\(?([A-D])\)?(?![A-Za-z])",
                     re.IGNORECASE)
_LABEL = re.compile(r"(?<![A-Za-z])\(?([A-D])[:.)](?!\w)")


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def parse_answer(text: str, options: Sequence[str]) -> Optional[int]:
    """Index of the option ``text`` chooses, or ``None`` when it cannot be told."""
    text = text.strip()
    if not text:
        return None
    m = _LEADING.match(text)
    if m:
        return LETTERS.index(m.group(1))
    m = _STATED.search(text)
    if m and m.group(1).upper() in LETTERS:
        return LETTERS.index(m.group(1).upper())
    answer = f" {_norm(text)} "
    found = [i for i, o in enumerate(options) if _norm(o) and f" {_norm(o)} " in answer]
    # An option contained in another ("Lagos" in "Lagos State") must not count twice.
    found = [i for i in found if not any(
        j != i and _norm(options[i]) in _norm(options[j]) for j in found)]
    if len(found) == 1:
        return found[0]
    labels = {m.group(1) for m in _LABEL.finditer(text)}
    if len(labels) == 1:
        return LETTERS.index(labels.pop())
    return None


_STANDALONE_LETTER = re.compile(r"\b([A-D])\b", re.IGNORECASE)


def parse_answer_paper(text: str, options: Sequence[str]) -> Optional[int]:
    """The authors' parser (their 17_sft_eval.py), reported beside ours under ``--protocol paper``.

    The first standalone letter A-D anywhere, in either case (so the word "a" reads as A); else
    the longest option whose text occurs in the answer (case-insensitive); else ``None``.
    """
    raw = text.strip()
    m = _STANDALONE_LETTER.search(raw)
    if m:
        index = LETTERS.index(m.group(1).upper())
        if index < len(options):
            return index
    lowered = raw.lower()
    found = [o for o in options if o.lower() in lowered]
    if not found:
        return None
    return list(options).index(max(found, key=len))
