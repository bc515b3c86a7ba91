"""The document record every reader produces and every later stage consumes."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Optional

from megatron_meta.errors import DataError


@dataclasses.dataclass(frozen=True)
class Document:
    """One article with its metadata.

    Attributes:
        id: Stable identifier within the corpus (NOW textID, JSONL id or line number).
        url: The article's URL as given by the source (may be empty when unknown).
        country: Lowercase country code, e.g. ``"ng"`` (NOW codes are ISO 3166 alpha-2,
            lowercased, with ``"gb"`` for the UK).
        continent: Continent name as written in the metadata, e.g. ``"Africa"``.
        title: Headline; empty when the corpus has none.
        text: Body text, left as the source has it (NOW's ``@ @ @`` masking included).
        date: Optional publication date string.
    """

    id: str
    url: str
    country: str
    continent: str
    title: str
    text: str
    date: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        """Plain dict for JSONL (held-out splits are written with this)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: Dict[str, Any]) -> "Document":
        """Inverse of :meth:`to_json`."""
        return cls(
            id=str(obj["id"]),
            url=obj.get("url", "") or "",
            country=obj["country"],
            continent=obj["continent"],
            title=obj.get("title", "") or "",
            text=obj["text"],
            date=obj.get("date"),
        )


def read_documents(path: str) -> List[Document]:
    """Held-out JSONL (one :class:`Document` a line, as preprocessing writes it)."""
    docs: List[Document] = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    docs.append(Document.from_json(json.loads(line)))
                except (ValueError, KeyError, TypeError) as e:
                    raise DataError(f"{path}:{lineno}: not a held-out document record ({e})")
    except OSError as e:
        raise DataError(f"{path}: cannot read held-out documents ({e}); re-run preprocess")
    return docs
