"""JSONL corpora: one JSON object a line, keys configurable as in Megatron-LM (``--json-keys``).

Rules for each record (every failure goes to :class:`BadRecords` with ``path:line``):

- bytes that are not UTF-8 -> ``invalid_utf8``; not a JSON object -> ``malformed_json``;
- text key absent, not a string, or blank -> ``missing_text``;
- url absent or empty -> ``missing_url`` (set ``--url-key ''`` for a corpus without URLs);
- country absent or empty -> ``missing_country``; not a known code or name -> ``unknown_country``;
- continent: the record's own value when it has one, else the region table's;
- title: optional. A record without one gets an empty title and its body is ``CONTENT: ...``
  alone; only with ``require_title`` (``--require-title``) is it reported as ``missing_title``.

Files are read as bytes line by line (``.gz`` too), so one bad line never loses the rest of a file
and memory does not grow with the file.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
from typing import IO, Any, Dict, Iterator, Optional, Sequence

from megatron_meta.corpora.bad_records import BadRecords
from megatron_meta.corpora.records import Document
from megatron_meta.errors import DataError
from megatron_meta.metadata.regions import RegionTable

logger = logging.getLogger(__name__)

# json.loads(str) without options is this decoder's decode(); calling it directly saves a frame.
_decode_json = json.JSONDecoder().decode


@dataclasses.dataclass
class JsonKeys:
    """Which JSON key holds each field. An empty string means the corpus has no such field."""

    text: str = "text"
    """Body text (Megatron's ``--json-keys``; we index exactly one text key)."""
    url: str = "url"
    """Article URL; ``''`` for a corpus without URLs (documents get an empty url)."""
    country: str = "country"
    """Country code or English name (``"NG"``, ``"Nigeria"``, ``"U.K."``); required."""
    continent: str = "continent"
    """Continent; when a record lacks it, it is looked up from the country."""
    title: str = "title"
    """Headline; optional (see the module docstring); ``''`` for a corpus without titles."""
    id: str = "id"
    """Document id; when absent the id is ``{file name}:{line}``."""
    date: str = "date"
    """Publication date, kept as given; optional."""
    require_title: bool = False
    """Report records without a title as ``missing_title`` instead of keeping them untitled."""


def open_binary(path: str) -> IO[bytes]:
    """Open a plain or gzip file for binary reading; a missing/unreadable file is a DataError."""
    try:
        if path.endswith(".gz"):
            f = gzip.open(path, "rb")
            f.peek(1)  # fail here, with the file named, if it is not gzip
            return f
        return open(path, "rb")
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read input file {path}: {e}") from e


def _field(obj: Dict[str, Any], key: str) -> Optional[str]:
    """The stripped string value of ``key``, or None when absent, null or blank."""
    value = obj.get(key) if key else None
    if value is None:
        return None
    if type(value) is not str:
        value = str(value)
    return value.strip() or None


def record_to_document(
    obj: Any, where: str, default_id: str, keys: JsonKeys, regions: RegionTable, bad: BadRecords
) -> Optional[Document]:
    """Validate one decoded record; returns None (after reporting) when it is unusable."""
    if not isinstance(obj, dict):
        bad.report("malformed_json", where, f"expected a JSON object, got {type(obj).__name__}")
        return None
    text = obj.get(keys.text)
    if not isinstance(text, str) or not text.strip():
        bad.report("missing_text", where, f"text key {keys.text!r} is missing or empty")
        return None
    url = _field(obj, keys.url)
    if keys.url and url is None:
        bad.report("missing_url", where, f"url key {keys.url!r} is missing or empty")
        return None
    raw_country = _field(obj, keys.country)
    if raw_country is None:
        bad.report("missing_country", where, f"country key {keys.country!r} is missing or empty")
        return None
    country = regions.normalize_country(raw_country)
    if country is None:
        bad.report(
            "unknown_country",
            where,
            f"unknown country {raw_country!r}; use an ISO 3166 code or name, or add it with "
            "--continent-map",
        )
        return None
    continent = _field(obj, keys.continent) or regions.continent_of(country)
    if continent is None:
        bad.report("unknown_country", where, f"no continent known for country {country!r}")
        return None
    title = _field(obj, keys.title)
    if title is None and keys.require_title:
        bad.report("missing_title", where, f"title key {keys.title!r} is missing or empty")
        return None
    return Document(
        id=_field(obj, keys.id) or default_id,
        url=url or "",
        country=country,
        continent=continent,
        title=title or "",
        text=text,
        date=_field(obj, keys.date),
    )


def read_jsonl(
    paths: Sequence[str], keys: JsonKeys, regions: RegionTable, bad: BadRecords
) -> Iterator[Document]:
    """Stream documents from JSONL files (plain or ``.gz``) in the order given."""
    for path in paths:
        logger.info("reading %s", path)
        yield from read_jsonl_range(path, keys, regions, bad)


def read_jsonl_range(
    path: str,
    keys: JsonKeys,
    regions: RegionTable,
    bad: BadRecords,
    start: int = 0,
    end: Optional[int] = None,
    first_line: int = 1,
) -> Iterator[Document]:
    """Documents of the lines in bytes ``[start, end)`` of ``path`` (``end`` None: to the end).

    ``start`` must be a line start and ``first_line`` its line number (1-based), so locations and
    default ids are those of a whole-file read; a ``.gz`` file is only read whole.
    """
    logger.debug("reading %s [%d, %s)", path, start, end)
    name = path.rsplit("/", 1)[-1]
    with open_binary(path) as f:
        lineno = first_line - 1
        try:
            if start:
                f.seek(start)
            # Iterating the file, not calling readline(), saves a method call per record.
            lines = f if end is None else _lines_until(f, end - start)
            for line in lines:
                lineno += 1
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    decoded = line.decode("utf-8")
                except UnicodeDecodeError as e:
                    bad.report("invalid_utf8", where, f"invalid UTF-8 at byte {e.start}")
                    continue
                try:
                    obj = _decode_json(decoded)
                except json.JSONDecodeError as e:
                    bad.report(
                        "malformed_json", where, f"malformed JSON: {e.msg} (column {e.colno})"
                    )
                    continue
                doc = record_to_document(obj, where, f"{name}:{lineno}", keys, regions, bad)
                if doc is not None:
                    yield doc
        except (OSError, EOFError) as e:  # truncated or corrupt gzip (nothing else does I/O)
            raise DataError(f"{path}:{lineno + 1}: cannot read: {e}") from e


def _lines_until(f: IO[bytes], size: int) -> Iterator[bytes]:
    """The lines of the next ``size`` bytes of ``f`` (which end at a line end)."""
    for line in f:
        yield line
        size -= len(line)
        if size <= 0:
            return
