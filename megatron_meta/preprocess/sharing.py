"""Startup decision: batch encoding and shared-body encoding, proven then checked on a sample.

Before any worker starts, the main process:

1. checks the batch encoder against ``tokenizer.tokenize`` on sample texts (falls back to
   text-by-text ``tokenize`` on any difference);
2. asks :func:`~megatron_meta.tokenizer.proofs.sharing_plan` whether (and how) a metadata block
   and its body may be encoded apart, and if so, encodes the sample (the first documents of the corpus plus
   crafted boundary cases: URLs ending in ``/``, ``?``, digits or non-ASCII, titles starting with
   punctuation, spaces or digits, untitled documents, values ending in spaces) both ways for every
   variant. Sharing is used only if the proof holds and every id matches. Otherwise all variants'
   full texts of a chunk are batch-encoded (one library call per variant), and the log says why.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from typing import Iterator, List, Optional, Tuple

import numpy as np

from megatron_meta.corpora.records import Document
from megatron_meta.metadata.formatting import format_document
from megatron_meta.preprocess.pipeline import DocumentEncoder, EncoderConfig
from megatron_meta.tokenizer.batch import LibraryEncoder
from megatron_meta.tokenizer.proofs import SharePlan

logger = logging.getLogger(__name__)

SAMPLE_DOCUMENTS = 32
# The checks concern the start of the body; longer texts would only make start-up slower.
CHECK_CHARS = 400
# Text needed to learn punkt parameters for --split-sentences (documents are buffered up to this).
PUNKT_SAMPLE_CHARS = 2_000_000


def sample_documents(
    stream: Iterator[Document], for_punkt: bool
) -> Tuple[List[Document], Iterator[Document]]:
    """Take the first documents for the startup checks; returns them and the unchanged stream."""
    sample: List[Document] = []
    chars = 0
    for doc in stream:
        sample.append(doc)
        chars += len(doc.text)
        if len(sample) >= SAMPLE_DOCUMENTS and (not for_punkt or chars >= PUNKT_SAMPLE_CHARS):
            break
    return sample, itertools.chain(sample, stream)


def boundary_cases() -> List[Document]:
    """Crafted documents around the metadata/body boundary."""
    urls = [
        "https://a.example/x/",
        "http://b.example/p?id=7",
        "https://c.example/2024/01/31",
        "https://d.example/caf\u00e9",
        "https://g.example/trailing ",
        "https://e.example/a.html",
        "www.f.example",
        "",
    ]
    titles = [
        "Plain title",
        " leading space",
        '"Quoted" title',
        "2024: numbers first",
        "...dots",
        "\u00c9t\u00e9 \u2014 unicode",
        "",
    ]
    docs = []
    for i, (url, title) in enumerate(itertools.product(urls, titles)):
        docs.append(
            Document(
                id=f"boundary-{i}",
                url=url,
                country=["ng", "gb", "us", "in"][i % 4],
                continent=["Africa", "Europe", "America", "Asia"][i % 4],
                title=title,
                text=" Body starts with a space.\n\nSecond paragraph: 3 items; done."
                if i % 2
                else "Body text. Another sentence!\nA new line.",
            )
        )
    return docs


def choose_shared_body(
    tokenizer, config: EncoderConfig, sample: List[Document], allow: bool = True
) -> Tuple[Optional[SharePlan], Optional[LibraryEncoder]]:
    """Returns ``(shared_body, library)`` for :class:`EncoderConfig`."""
    from megatron_meta.tokenizer.batch import BatchEncoder
    from megatron_meta.tokenizer.proofs import sharing_plan

    docs = [dataclasses.replace(d, text=d.text[:CHECK_CHARS]) for d in sample] + boundary_cases()
    texts = [format_document(d, v, config.url_form) for d in docs for v in config.variants]
    batch = BatchEncoder(tokenizer)
    batch.verify(texts)
    library = batch.library
    logger.info("tokenizer %s: encoding with %s", config.tokenizer_type, batch.kind)
    if not allow:
        logger.info("shared-body encoding switched off: each variant's full text is encoded")
        return None, library
    plan, reason = sharing_plan(tokenizer)
    if plan is None:
        logger.info(
            "encoding each variant's full text, batched per chunk (no shared body: %s)", reason
        )
        return None, library
    trial = dataclasses.replace(config, shared_body=plan, library=library)
    whole = dataclasses.replace(config, shared_body=None, library=library)
    shared_out = DocumentEncoder(trial, tokenizer).encode(docs)
    whole_out = DocumentEncoder(whole, tokenizer).encode(docs)
    for variant in config.variants:
        a, b = shared_out[variant], whole_out[variant]
        same = (
            np.array_equal(a.tokens, b.tokens)
            and np.array_equal(a.sequence_lengths, b.sequence_lengths)
            and np.array_equal(a.metadata_tokens, b.metadata_tokens)
        )
        if not same:
            logger.warning(
                "shared-body ids differ from full-text ids for variant %s despite the proof (%s); "
                "encoding each full text instead",
                variant,
                reason,
            )
            return None, library
    logger.info(
        "body encoded once for %d variant(s) (%s): %s", len(config.variants), plan.family, reason
    )
    return plan, library
