"""Text cleaning applied by every reader (``--clean-text``), and duplicate ids dropped.

News text from crawls (NOW above all) carries HTML: entities (``&amp;``, ``&#8217;``) and tags.
Modes:

- ``html`` (our default): entities unescaped; ``<p>``, ``<br>`` and ``<h1>``..``<h6>`` tags (opening
  or closing) become line breaks, every other tag a space; then spaces around the inserted breaks
  are trimmed and runs of blank lines cut to one, so paragraphs survive. A text with neither ``<``
  nor ``&`` is returned unchanged.
- ``one-line`` (the paper protocol, FACTS 1a): entities unescaped, the same tags replaced, then
  ALL whitespace, newlines included, collapsed to one space, so the content is a single line.
  (The authors' pattern also breaks at any tag whose name starts with h or p, such as ``<hr>``;
  with every break collapsed to a space afterwards this makes no difference to the text.)
- ``off``: the text exactly as the reader found it.

Only the body text is cleaned; titles are left as their source gives them (as the authors did).
Duplicate document ids (the first one kept) are dropped in every mode and counted as
``duplicate_id`` beside the other skipped records: the same article twice would be trained on
twice, or land in both a test set and the training data. This holds for the corpora read whole
by the main process (NOW, the embedded news corpus: ``registry.DEDUPLICATED_FORMATS``); JSONL,
Parquet and ``datasets`` inputs are read in ranges by the workers, which clean each document
(:func:`clean_document`) but cannot see ids outside their range, so their ids are kept as given.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import re
from typing import Iterable, Iterator, Optional, Set

from megatron_meta.corpora.bad_records import BadRecords
from megatron_meta.corpora.records import Document

logger = logging.getLogger(__name__)

MODES = ("html", "one-line", "off")

_BREAK_TAG = re.compile(r"</?(?:p|br|h[1-6])(?:\s[^>]*)?/?>", re.IGNORECASE)
_PAPER_BREAK_TAG = re.compile(r"<(?:h|p)[^>]*>|</(?:h|p)>")
_ANY_TAG = re.compile(r"<[^>]+>")
_SPACES_AROUND_BREAK = re.compile(r"[ \t]*\n[ \t]*")
_BLANK_LINES = re.compile(r"\n{3,}")
_SPACE_RUN = re.compile(r"[ \t]{2,}")
_ANY_WHITESPACE = re.compile(r"\s+")


def clean_text(text: str, mode: str) -> str:
    """``text`` cleaned in ``mode`` (one of :data:`MODES`)."""
    if mode == "off":
        return text
    if mode == "one-line":
        text = html.unescape(text)
        text = _ANY_TAG.sub(" ", _PAPER_BREAK_TAG.sub("\n", text))
        return _ANY_WHITESPACE.sub(" ", text).strip()
    if mode != "html":
        raise ValueError(f"clean_text: unknown mode {mode!r}")
    if "<" not in text and "&" not in text:
        return text
    text = html.unescape(text)
    text = _ANY_TAG.sub(" ", _BREAK_TAG.sub("\n", text))
    text = _SPACES_AROUND_BREAK.sub("\n", text)
    text = _BLANK_LINES.sub("\n\n", _SPACE_RUN.sub(" ", text))
    return text.strip()


@dataclasses.dataclass
class Cleaning:
    """How documents are cleaned after reading."""

    mode: str = "html"
    """``--clean-text``: html, one-line or off."""


def clean_document(doc: Document, cleaning: Cleaning, bad: BadRecords) -> Optional[Document]:
    """``doc`` with its text cleaned; None (a ``missing_text`` bad record) when nothing is left."""
    text = clean_text(doc.text, cleaning.mode)
    if not text:
        bad.report("missing_text", f"document {doc.id}", "no text left after --clean-text")
        return None
    return doc if text == doc.text else dataclasses.replace(doc, text=text)


def clean_documents(
    docs: Iterable[Document], cleaning: Cleaning, bad: BadRecords, drop_duplicate_ids: bool = True
) -> Iterator[Document]:
    """``docs`` with their text cleaned and, with ``drop_duplicate_ids``, repeated ids left out
    (counted as ``duplicate_id``); a text that cleaning empties is a ``missing_text`` bad record."""
    seen: Set[str] = set()
    duplicates = 0
    try:
        for doc in docs:
            if drop_duplicate_ids:
                if doc.id in seen:
                    duplicates += 1
                    continue
                seen.add(doc.id)
            cleaned = clean_document(doc, cleaning, bad)
            if cleaned is not None:
                yield cleaned
    finally:
        if duplicates:
            logger.info("left out %d documents whose id was seen before (duplicate_id)", duplicates)
            bad.merge({"duplicate_id": duplicates})
