"""The NOW corpus (News on the Web) as users receive it from its distributor.

On disk (FACTS section 1):

- sources files ``now-sources-{year}.txt`` / ``sources-YY-MM.txt`` / ``{year}-sources.txt``,
  ISO-8859-1, possibly with header lines (``Source Line ...``), in one of two layouts, detected
  per file from its first data row: the distributor's 7 tab-separated fields ``textID, #words,
  date, country, website, url, title``, or the 5 whitespace-separated fields the authors read
  (``textID date country url title``, split at most 4 times so the title keeps its spaces);
- text files ``YY-MM-cc.txt`` (the US split into ``us1``..``us5``), usually inside
  ``*-text.zip``: one entry per article, ``@@<textID> <text>``, with the copyright masking
  ``@ @ @ ...`` left exactly as it is.

Inputs may be folders (searched recursively), zips or single files, in any mix. All sources rows are
loaded first (metadata only: textID -> country, url, title, date; :class:`NowCorpus`); the text then
streams one entry at a time, and each text file can be read on its own (preprocessing's workers
read one a task). Text files are decoded as UTF-8 where they are, else ISO-8859-1, line by line.

Options (:class:`NowOptions`; the paper protocol sets both): the country taken from the text
file's name (``24-01-us3.txt`` -> ``us``) instead of the sources row, and rows without a title
dropped (counted as ``untitled``).

Countries: by default the paper's 18 (``NOW_CONTINENTS``, so ``au``/``nz`` are dropped) plus any a
``--continent-map`` file names; ``countries`` overrides. Dropped documents are counted as
``excluded_country`` (not an error); a country the table does not know is ``unknown_country``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import re
import zipfile
from typing import IO, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Set, Tuple

from megatron_meta.corpora.bad_records import BadRecords
from megatron_meta.corpora.records import Document
from megatron_meta.errors import DataError
from megatron_meta.metadata.regions import NOW_CONTINENTS, RegionTable

logger = logging.getLogger(__name__)

# 24-01-us1.txt -> country "us"; older names such as 10-01-gb.txt too.
_TEXT_NAME = re.compile(r"^\d{2}-\d{2}-([a-z]{2})\d*\.txt$", re.IGNORECASE)
_ENTRY = re.compile(r"^@@(\d+)(?:\s|$)")

COUNTRY_FROM = ("sources", "file")


@dataclasses.dataclass(frozen=True)
class NowOptions:
    """Choices where the authors' reading of NOW differs from ours (FACTS 1a)."""

    country_from: str = "sources"
    """``sources``: the sources row's country (the text file's name when the row has none);
    ``file``: the text file's name, as the authors did (``--now-country``)."""
    require_title: bool = False
    """Drop rows without a title, counted as ``untitled`` (the authors' reader needs 5 fields)."""


@dataclasses.dataclass(frozen=True)
class _Member:
    """A file on disk (``container`` None) or a member of a zip."""

    container: Optional[str]
    name: str

    @property
    def display(self) -> str:
        return f"{self.container}!{self.name}" if self.container else self.name

    @property
    def basename(self) -> str:
        return os.path.basename(self.name)

    @contextlib.contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        try:
            with contextlib.ExitStack() as stack:
                if self.container is None:
                    f = stack.enter_context(open(self.name, "rb"))
                else:
                    zf = stack.enter_context(zipfile.ZipFile(self.container))
                    f = stack.enter_context(zf.open(self.name))
                yield f
        except (OSError, zipfile.BadZipFile, KeyError, EOFError) as e:
            raise DataError(f"cannot read NOW file {self.display}: {e}") from e


class _SourceRow(NamedTuple):
    # A tuple, not an object with a __dict__: NOW has tens of millions of sources rows.
    country: str
    url: str
    title: str
    date: str


# Stands in for the row of an article whose country is not kept, so its text entry is skipped
# as excluded (not reported as lacking a sources row) without holding its URL and title.
_EXCLUDED = _SourceRow("", "", "", "")


def _decode(line: bytes) -> str:
    # Sources are ISO-8859-1; newer text files are UTF-8. Valid UTF-8 is almost never accidental.
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("latin-1")


def _is_sources(name: str) -> bool:
    return "sources" in os.path.basename(name).lower()


def _collect(paths: Sequence[str]) -> Tuple[List[_Member], List[_Member]]:
    """Split the inputs into sources files and text files."""
    members: List[_Member] = []

    def add_zip(path: str) -> None:
        try:
            with zipfile.ZipFile(path) as zf:
                names = sorted(zf.namelist())
        except (OSError, zipfile.BadZipFile) as e:
            raise DataError(f"cannot read NOW zip {path}: {e}") from e
        for name in names:
            if name.endswith("/"):
                continue
            if name.lower().endswith(".zip"):
                logger.warning("%s!%s: nested zip not read; unzip it and pass it as --input", path, name)
            elif name.lower().endswith(".txt"):
                members.append(_Member(path, name))

    for path in paths:
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for fname in sorted(files):
                    full = os.path.join(root, fname)
                    if fname.lower().endswith(".zip"):
                        add_zip(full)
                    elif fname.lower().endswith(".txt"):
                        members.append(_Member(None, full))
        elif not os.path.exists(path):
            raise DataError(f"NOW input {path} does not exist")
        elif path.lower().endswith(".zip"):
            add_zip(path)
        else:
            members.append(_Member(None, path))
    sources = [m for m in members if _is_sources(m.name)]
    texts = sorted((m for m in members if not _is_sources(m.name)), key=lambda m: m.basename)
    if not sources:
        raise DataError(
            f"no NOW sources file (now-sources-*.txt or sources-*.txt) in --input {' '.join(paths)}; "
            "the sources files hold each article's country, URL and title"
        )
    if not texts:
        raise DataError(f"no NOW text files (YY-MM-cc.txt or *-text.zip) in --input {' '.join(paths)}")
    return sources, texts


def _layout(line: str) -> str:
    """``tab7`` (the distributor's layout) or ``space5`` (the authors' ``{year}-sources.txt``)."""
    return "tab7" if len(line.split("\t")) >= 6 else "space5"


def _split_row(line: str, layout: str) -> Optional[Tuple[str, str, str, str, str]]:
    """(textID, date, country, url, title) of a row, None when it has too few fields."""
    if layout == "tab7":
        fields = line.split("\t")
        if len(fields) < 6:
            return None
        title = fields[6] if len(fields) > 6 else ""
        return fields[0], fields[2], fields[3], fields[5], title
    fields = line.strip().split(maxsplit=4)
    if len(fields) < 4:
        return None
    return fields[0], fields[1], fields[2], fields[3], fields[4] if len(fields) > 4 else ""


def _load_sources(
    member: _Member, rows: Dict[str, _SourceRow], bad: BadRecords, excluded: Callable[[str], bool]
) -> None:
    layout: Optional[str] = None
    with member.open() as f:
        for lineno, raw in enumerate(f, 1):
            line = _decode(raw).rstrip("\r\n")
            first = line.split(None, 1)[0] if line.strip() else ""
            if not first.isdigit():
                continue  # blank, header ("Source Line ...", "textID ...") or separator lines
            if layout is None:
                layout = _layout(line)
                logger.info("%s: %s sources layout", member.display,
                            "7 tab-separated fields" if layout == "tab7" else "5 whitespace fields")
            fields = _split_row(line, layout)
            if fields is None:
                bad.report(
                    "malformed_sources_row",
                    f"{member.display}:{lineno}",
                    "expected 7 tab-separated fields (textID, #words, date, country, website, url, "
                    "title) or 5 whitespace-separated ones (textID, date, country, url, title), got "
                    f"{len(line.split(chr(9))) if layout == 'tab7' else len(line.split())}",
                )
                continue
            text_id, date, country, url, title = (x.strip() for x in fields)
            if excluded(country):
                rows[text_id] = _EXCLUDED
                continue
            rows[text_id] = _SourceRow(country=country, url=url, title=title, date=date)


def _entries(member: _Member) -> Iterator[Tuple[str, str]]:
    """(textID, text) of each ``@@`` entry; lines up to the next entry are part of its text."""
    text_id: Optional[str] = None
    parts: List[str] = []
    with member.open() as f:
        for raw in f:
            line = _decode(raw).rstrip("\r\n")
            match = _ENTRY.match(line)
            if match:
                if text_id is not None:
                    yield text_id, "\n".join(parts).strip()
                text_id = match.group(1)
                parts = [line[match.end():]]
            elif text_id is not None:
                parts.append(line)
    if text_id is not None:
        yield text_id, "\n".join(parts).strip()


def _count_entries(member: _Member) -> int:
    with member.open() as f:
        return sum(1 for raw in f if raw.startswith(b"@@"))


def _file_country(member: _Member, regions: RegionTable) -> Optional[str]:
    match = _TEXT_NAME.match(member.basename)
    return regions.normalize_country(match.group(1)) if match else None


class NowCorpus:
    """The sources rows of a NOW corpus, loaded once, and its text files, each readable apart.

    A preprocessing run loads it in the main process before forking its workers, so they share
    the rows (:func:`cached_corpus`); a worker started otherwise loads them itself, once.
    """

    def __init__(
        self, paths: Sequence[str], regions: RegionTable, bad: BadRecords,
        countries: Optional[Set[str]] = None, options: NowOptions = NowOptions(),
    ) -> None:  # fmt: skip
        self.regions = regions
        self.options = options
        default = set(NOW_CONTINENTS) | set(regions.explicit)
        self.keep = set(countries) if countries is not None else default
        sources, self.texts = _collect(paths)
        self.rows: Dict[str, _SourceRow] = {}
        keep = self.keep

        @functools.lru_cache(maxsize=None)
        def excluded_country(raw: str) -> bool:
            code = regions.normalize_country(raw) if raw else None
            return code is not None and code not in keep

        # With the country from the file name, a row's own country decides nothing.
        drop_row = excluded_country if options.country_from == "sources" else (lambda raw: False)
        for member in sources:
            logger.info("loading sources %s", member.display)
            _load_sources(member, self.rows, bad, drop_row)
        logger.info("%d sources rows; %d text files", len(self.rows), len(self.texts))
        self.sources_skipped: Dict[str, int] = {}
        """Bad sources rows of the load, by reason (set by :func:`cached_corpus`)."""

    def documents(self, bad: BadRecords) -> Iterator[Document]:
        """Every text file in order."""
        for member in self.texts:
            yield from self.file_documents(member, bad)

    def file_documents(self, member: "_Member", bad: BadRecords) -> Iterator[Document]:
        """The documents of one text file; left-out ones are counted in ``bad`` as they come
        (``excluded_country``, ``untitled``), so a record belongs to the next good document."""
        regions, keep, options, rows = self.regions, self.keep, self.options, self.rows
        file_country = _file_country(member, regions)
        if file_country is not None and file_country not in keep:
            # A whole file of a dropped country (e.g. au, nz): count it without decoding.
            n = _count_entries(member)
            logger.info(
                "skipping %s (%d documents, country %s not kept)", member.display, n, file_country
            )
            if n:
                bad.merge({"excluded_country": n})
            return
        logger.info("reading %s", member.display)
        n_entries = 0
        for text_id, text in _entries(member):
            n_entries += 1
            where = f"{member.display} (textID {text_id})"
            row = rows.get(text_id)
            if row is None:
                bad.report("no_sources_row", where, "no row with this textID in the sources files given")
                continue
            if row is _EXCLUDED:
                bad.merge({"excluded_country": 1})
                continue
            if not text:
                bad.report("missing_text", where, "empty text")
                continue
            if options.country_from == "file":
                raw_country = file_country or row.country
            else:
                raw_country = row.country or (file_country or "")
            country = regions.normalize_country(raw_country) if raw_country else None
            if country is None:
                reason = "unknown_country" if raw_country else "missing_country"
                bad.report(reason, where, f"country {raw_country!r} not in the region table "
                           "(add it with --continent-map)")
                continue
            if country not in keep:
                bad.merge({"excluded_country": 1})
                continue
            if not row.url:
                bad.report("missing_url", where, "the sources row has no URL")
                continue
            if options.require_title and not row.title:
                bad.merge({"untitled": 1})
                continue
            yield Document(
                id=text_id,
                url=row.url,
                country=country,
                continent=regions.continent_of(country) or "",
                title=row.title,
                text=text,
                date=row.date or None,
            )
        if n_entries == 0:
            logger.warning("%s has no @@textID entries; is it a NOW text file?", member.display)


def read_now(
    paths: Sequence[str],
    regions: RegionTable,
    bad: BadRecords,
    countries: Optional[Set[str]] = None,
    options: NowOptions = NowOptions(),
) -> Iterator[Document]:
    """Stream NOW documents from folders, zips or files (see the module docstring)."""
    yield from NowCorpus(paths, regions, bad, countries, options).documents(bad)


# One corpus per process: a preprocessing run loads it before its workers fork, and they (and
# the run's later reads) find it here instead of loading tens of millions of rows again.
_CACHED: Dict[tuple, NowCorpus] = {}


def cached_corpus(
    paths: Sequence[str], regions: Callable[[], RegionTable], regions_file: Optional[str],
    bad: BadRecords, countries: Optional[Set[str]] = None, options: NowOptions = NowOptions(),
) -> NowCorpus:  # fmt: skip
    """:class:`NowCorpus` of these inputs, loaded once per process while its files are unchanged.

    The bad sources rows found when loading are counted in ``bad`` on every call, as a fresh load
    would count them (logged only the first time).
    """
    sources, texts = _collect(paths)
    stamps = tuple(_stamp(m.container or m.name) for m in sources + texts)
    extra = _stamp(regions_file) if regions_file else None
    frozen = frozenset(countries) if countries is not None else None
    key = (tuple(paths), regions_file, extra, frozen, options, stamps)
    corpus = _CACHED.get(key)
    if corpus is None:
        _CACHED.clear()  # one corpus at a time: the rows are large
        before = dict(bad.counts)
        corpus = NowCorpus(paths, regions(), bad, countries, options)
        corpus.sources_skipped = {
            k: n - before.get(k, 0) for k, n in bad.counts.items() if n - before.get(k, 0)
        }
        _CACHED[key] = corpus
    else:
        bad.merge(corpus.sources_skipped)
    return corpus


def release_corpora() -> None:
    """Drop the cached corpus (a run that loaded it is over; its rows may take gigabytes)."""
    _CACHED.clear()


def _stamp(path: str) -> Tuple[str, int, int]:
    st = os.stat(path)
    return path, st.st_size, st.st_mtime_ns


def text_file_sizes(corpus: NowCorpus) -> List[Tuple[str, int]]:
    """(display name, bytes) of each text file, in reading order."""
    out = []
    for m in corpus.texts:
        if m.container is None:
            size = os.path.getsize(m.name)
        else:
            with zipfile.ZipFile(m.container) as zf:
                size = zf.getinfo(m.name).file_size
        out.append((m.display, size))
    return out
