"""Choose a corpus reader from the inputs and flags, and the flags that describe a corpus.

``--input-format auto`` decides by what the inputs are:

- ``news-articles`` (the word itself) or a file named ``NewsArticles.zip``/``News100.zip``
  -> the embedded news corpus (FACTS section 3);
- ``*.jsonl``, ``*.json``, ``*.jsonl.gz``, ``*.json.gz`` -> JSONL;
- ``*.parquet`` -> Parquet; a ``datasets`` ``save_to_disk`` folder -> its arrow files
  (:mod:`~megatron_meta.corpora.columnar`; same keys and bad-record rules as JSONL);
- a folder, a ``.zip`` or a ``.txt`` file -> the NOW corpus (sources + text files).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from typing import Iterator, List, Optional, Set

from megatron_meta.corpora.bad_records import BadRecords
from megatron_meta.corpora.cleaning import MODES as CLEAN_MODES
from megatron_meta.corpora.cleaning import Cleaning, clean_documents
from megatron_meta.corpora.columnar import is_datasets_folder
from megatron_meta.corpora.jsonl import JsonKeys, read_jsonl
from megatron_meta.corpora.records import Document
from megatron_meta.errors import ConfigError
from megatron_meta.metadata.regions import RegionTable
from megatron_meta.protocol import OURS, PAPER, PROTOCOLS

logger = logging.getLogger(__name__)

FORMATS = ("auto", "jsonl", "parquet", "datasets", "now", "news-articles")
NEWS_ARTICLES = "news-articles"
_NEWS_ZIPS = ("newsarticles.zip", "news100.zip")
_JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")


@dataclasses.dataclass
class CorpusSpec:
    """Everything needed to read a corpus into :class:`Document` records."""

    inputs: List[str]
    """Files, folders or zips (``--input``); ``news-articles`` names the embedded corpus."""
    format: str = "auto"
    """One of auto, jsonl, now, news-articles (``--input-format``)."""
    keys: JsonKeys = dataclasses.field(default_factory=JsonKeys)
    """JSONL key names (``--json-keys``, ``--url-key``, ...)."""
    continent_map: Optional[str] = None
    """``--continent-map FILE`` overriding the default country -> continent table."""
    countries: Optional[Set[str]] = None
    """Keep only these country codes (``--countries``); None keeps the reader's default."""
    cleaning: Cleaning = dataclasses.field(default_factory=Cleaning)
    """Text cleaning after reading (``--clean-text``); duplicate ids are always dropped."""
    now_country: str = "sources"
    """NOW: the country from the sources row or from the text file's name (``--now-country``)."""

    def regions(self) -> RegionTable:
        """The region table this spec asks for."""
        if self.continent_map:
            return RegionTable.from_file(self.continent_map)
        return RegionTable.default()


def detect_format(inputs: List[str]) -> str:
    """The reader ``auto`` picks for ``inputs``; ConfigError when they disagree or are unknown."""
    if not inputs:
        raise ConfigError("--input: give at least one file, folder or 'news-articles'")
    found = set()
    for path in inputs:
        lower = os.path.basename(path.rstrip("/")).lower()
        if path == NEWS_ARTICLES or lower in _NEWS_ZIPS:
            found.add("news-articles")
        elif lower.endswith(_JSONL_SUFFIXES):
            found.add("jsonl")
        elif lower.endswith(".parquet"):
            found.add("parquet")
        elif os.path.isdir(path) and is_datasets_folder(path):
            found.add("datasets")
        elif os.path.isdir(path) or lower.endswith((".zip", ".txt")):
            found.add("now")
        else:
            raise ConfigError(
                f"--input {path}: cannot tell its format; pass --input-format "
                "jsonl|parquet|datasets|now|news-articles"
            )
    if len(found) > 1:
        raise ConfigError(
            f"--input mixes formats ({', '.join(sorted(found))}); preprocess one format a run"
        )
    return found.pop()


def resolve_format(spec: CorpusSpec) -> str:
    """The reader ``spec`` asks for (``auto`` resolved)."""
    fmt = spec.format if spec.format != "auto" else detect_format(spec.inputs)
    if fmt not in FORMATS:
        raise ConfigError(f"--input-format: {fmt!r} is not one of {', '.join(FORMATS)}")
    return fmt


# Formats whose ids are the corpus's own (NOW text ids, the embedded corpus's article ids): a
# repeated id is a repeated article and is dropped (NOW read in tasks: a first pass of ids finds
# the repeats across tasks, see preprocess/dispatch.py). The record formats' ids default to
# file:line, and dropping repeats there would need such a pass too (see clean_documents).
DEDUPLICATED_FORMATS = ("now", "news-articles")


def iter_documents(spec: CorpusSpec, bad: BadRecords) -> Iterator[Document]:
    """Stream the corpus's documents, cleaned (``spec.cleaning``), only ``spec.countries``,
    each id once for :data:`DEDUPLICATED_FORMATS`; bad and dropped records are counted in ``bad``."""
    dedupe = resolve_format(spec) in DEDUPLICATED_FORMATS
    return clean_documents(_read(spec, bad), spec.cleaning, bad, drop_duplicate_ids=dedupe)


def now_corpus(spec: CorpusSpec, bad: BadRecords):
    """The NOW corpus of ``spec`` (its sources rows loaded once per process), bad rows in ``bad``."""
    from megatron_meta.corpora.now import NowOptions, cached_corpus

    options = NowOptions(country_from=spec.now_country, require_title=spec.keys.require_title)
    return cached_corpus(
        spec.inputs, spec.regions, spec.continent_map, bad, spec.countries, options
    )


def _read(spec: CorpusSpec, bad: BadRecords) -> Iterator[Document]:
    fmt = resolve_format(spec)
    regions = spec.regions()
    logger.info("reading %d input(s) as %s", len(spec.inputs), fmt)
    if fmt == "now":
        # NOW filters by country itself (it can skip whole files); nothing to add here.
        yield from now_corpus(spec, bad).documents(bad)
        return
    if fmt == "jsonl":
        docs = read_jsonl(spec.inputs, spec.keys, regions, bad)
    elif fmt in ("parquet", "datasets"):
        from megatron_meta.corpora import columnar

        def columns() -> Iterator[Document]:
            for path in spec.inputs:
                if fmt == "parquet":
                    yield from columnar.read_parquet(path, spec.keys, regions, bad)
                else:
                    for arrow in columnar.datasets_arrow_files(path):
                        yield from columnar.read_arrow(arrow, spec.keys, regions, bad)

        docs = columns()
    else:
        from megatron_meta.corpora.news_articles import fetch_news_articles, read_news_articles

        def news() -> Iterator[Document]:
            for path in spec.inputs:
                if path == NEWS_ARTICLES:
                    path = fetch_news_articles()
                subset = "News100" if os.path.basename(path).lower() == "news100.zip" else "NewsArticles"
                yield from read_news_articles(path, regions, bad, subset)

        docs = news()
    if spec.countries is None:
        yield from docs
        return
    excluded = 0
    for doc in docs:
        if doc.country in spec.countries:
            yield doc
        else:
            excluded += 1
    if excluded:
        logger.info("left out %d documents of countries outside --countries", excluded)
        bad.merge({"excluded_country": excluded})


def _comma_set(value: str) -> Set[str]:
    return {v.strip().lower() for v in value.split(",") if v.strip()}


def add_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags describing the input corpus (Megatron-LM names where they exist)."""
    g = parser.add_argument_group("input corpus")
    g.add_argument(
        "--input", nargs="+", required=True,
        help="JSONL files (.gz ok), Parquet files, datasets save_to_disk folders, NOW "
        "folders/zips/files, or 'news-articles' (the embedded corpus)",
    )
    g.add_argument("--input-format", choices=FORMATS, default="auto",
                   help="reader to use (default: auto, from the input names)")
    g.add_argument(
        "--json-keys", nargs="+", default=["text"], metavar="KEY",
        help="JSONL key of the document text, as in Megatron-LM. Megatron accepts several keys; "
        "we index exactly one text key (the formatted document), so give one",
    )
    g.add_argument("--url-key", default="url",
                   help="JSONL key (Parquet/datasets column) of the URL ('' if the corpus has none)")
    g.add_argument("--country-key", default="country",
                   help="JSONL key of the country (code such as 'ng' or name such as 'Nigeria')")
    g.add_argument("--continent-key", default="continent",
                   help="JSONL key of the continent; derived from the country when a record has none")
    g.add_argument("--title-key", default="title",
                   help="JSONL key of the title; untitled records get a 'CONTENT: ...' body")
    g.add_argument("--id-key", default="id", help="JSONL key of the document id (default: file:line)")
    g.add_argument("--date-key", default="date", help="JSONL key of the publication date")
    g.add_argument("--require-title", action="store_true",
                   help="treat records without a title as bad records (missing_title)")
    g.add_argument("--continent-map", metavar="FILE",
                   help="JSON {\"cc\": \"Continent\"} or TSV 'cc<TAB>Continent' overriding the "
                   "default table (NOW's mapping + ISO 3166)")
    g.add_argument("--countries", type=_comma_set, metavar="CC,CC",
                   help="keep only these country codes (NOW default: the paper's 18 countries)")
    g.add_argument("--clean-text", choices=CLEAN_MODES, default=None,
                   help="html: entities unescaped, tags removed, paragraph breaks kept (default); "
                   "one-line: the same, then all whitespace collapsed to one space (--protocol "
                   "paper); off: text as read. Duplicate document ids are always dropped (counted)")
    g.add_argument("--now-country", choices=("sources", "file"), default=None,
                   help="NOW: country from the sources row (default) or from the text file's name "
                   "(24-01-us3.txt -> us; --protocol paper)")
    g.add_argument("--protocol", choices=PROTOCOLS, default=OURS,
                   help="'paper': the authors' reading of the corpus: --clean-text one-line, "
                   "--now-country file, --require-title (untitled rows dropped and counted)")


def corpus_spec_from_args(args: argparse.Namespace) -> CorpusSpec:
    """Build a :class:`CorpusSpec` from flags added by :func:`add_corpus_arguments`."""
    paper = getattr(args, "protocol", OURS) == PAPER
    if len(args.json_keys) != 1:
        raise ConfigError(
            f"--json-keys {' '.join(args.json_keys)}: give exactly one text key; each document is "
            "formatted and indexed as one sequence"
        )
    keys = JsonKeys(
        text=args.json_keys[0],
        url=args.url_key,
        country=args.country_key,
        continent=args.continent_key,
        title=args.title_key,
        id=args.id_key,
        date=getattr(args, "date_key", "date"),
        require_title=getattr(args, "require_title", False) or paper,
    )
    if not keys.country:
        raise ConfigError("--country-key must name a key: every document needs a country")
    countries = None
    if args.countries is not None:
        regions = RegionTable.from_file(args.continent_map) if args.continent_map else RegionTable.default()
        codes = {c: regions.normalize_country(c) for c in args.countries}
        unknown = sorted(c for c, code in codes.items() if code is None)
        if unknown:
            raise ConfigError(f"--countries: unknown code(s) {', '.join(unknown)}; use ISO 3166 alpha-2")
        countries = set(codes.values())
    return CorpusSpec(
        inputs=list(args.input),
        format=args.input_format,
        keys=keys,
        continent_map=args.continent_map,
        countries=countries,
        cleaning=Cleaning(getattr(args, "clean_text", None) or ("one-line" if paper else "html")),
        now_country=getattr(args, "now_country", None) or ("file" if paper else "sources"),
    )
