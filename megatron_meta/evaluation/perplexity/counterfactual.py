"""Counterfactual metadata: does a model read its metadata?

Each held-out document of region R is scored (from its ``TITLE:`` token on, the same body tokens
in every condition) with its own metadata, with the metadata of each other region G (the URL,
country and continent of a document drawn from G's test set, seeded, a different one for each
document) and with none. Per region the report gives perplexity in each condition and the
paired ratio own / wrong (the wrong conditions' NLL averaged per document), with a bootstrap
interval: below 1 means the right metadata helps over the wrong one.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Dict, List, Optional, Sequence

import numpy as np

from megatron_meta.corpora.records import Document
from megatron_meta.evaluation.perplexity.evaluate import (
    Codec, Encoded, ScoreFn, corpus_perplexity, loss_start, paired_ratio_ci, sample_documents,
)
from megatron_meta.metadata.formatting import format_document, metadata_prefix

OWN, NONE = "own", "none"


@dataclasses.dataclass
class CounterfactualResult:
    """One model on one region's test documents."""

    model: str
    region: str
    documents: int
    tokens: int
    ppl: Dict[str, float]
    """Condition -> perplexity; conditions: ``own``, ``none`` and each other region's name."""
    ppl_wrong: float
    """Perplexity with the other regions' metadata, NLL averaged over them per document."""
    ratio_own_wrong: List[float]
    """own / wrong: [ratio, low, high] (paired bootstrap over documents)."""
    ratio_own_none: List[float]
    """own / none: [ratio, low, high]."""


def encode_conditions(doc: Document, sources: Dict[str, Optional[Document]], variant: str,
                      url_form: str, codec: Codec, seq_length: int) -> Optional[Dict[str, Encoded]]:
    """``doc`` under each condition's metadata (``None``: no metadata), the same body tokens in all."""
    encoded = {}
    for name, source in sources.items():
        if source is None:
            text, prefix = format_document(doc, "none"), ""
        else:
            meta = dataclasses.replace(doc, url=source.url, country=source.country,
                                       continent=source.continent)
            text, prefix = format_document(meta, variant, url_form), metadata_prefix(meta, variant, url_form)
        ids = list(codec.tokenize(text))
        encoded[name] = (ids, loss_start(codec.detokenize, ids, len(prefix)))
    body = seq_length - max(start for _, start in encoded.values())
    if body < 1:
        return None
    return {n: Encoded([codec.eod] + ids[:start + body], start + 1) for n, (ids, start) in encoded.items()}


def counterfactual(score: ScoreFn, codec: Codec, sets: Dict[str, List[Document]], model: str,
                   max_documents: int = 1000, seq_length: int = 1024, seed: int = 42,
                   variant: str = "full", url_form: str = "full",
                   bootstrap_samples: int = 1000) -> List[CounterfactualResult]:
    """Score every region's sample under own, none and every other region's metadata."""
    if len(sets) < 2:
        from megatron_meta.errors import DataError

        raise DataError("counterfactual metadata needs held-out test sets of at least 2 regions")
    results = []
    for region, docs in sets.items():
        others = [g for g in sets if g != region]
        rng = random.Random(f"{seed}:{region}")
        by_condition: Dict[str, List[Encoded]] = {c: [] for c in [OWN, NONE, *others]}
        for doc in sample_documents(docs, max_documents, seed):
            sources: Dict[str, Optional[Document]] = {OWN: doc, NONE: None}
            sources.update({g: rng.choice(sets[g]) for g in others})
            encoded = encode_conditions(doc, sources, variant, url_form, codec, seq_length)
            if encoded is not None:
                for name, item in encoded.items():
                    by_condition[name].append(item)
        scored = {c: score([e.sequence for e in items], [e.start for e in items])
                  for c, items in by_condition.items()}
        tokens = np.asarray(scored[OWN][1], dtype=np.float64)
        for c, (_, count) in scored.items():
            assert np.array_equal(count, scored[OWN][1]), f"condition {c} scored other tokens"
        wrong = np.mean([scored[g][0] for g in others], axis=0)
        own, none = np.asarray(scored[OWN][0]), np.asarray(scored[NONE][0])
        results.append(CounterfactualResult(
            model=model, region=region, documents=len(own), tokens=int(tokens.sum()),
            ppl={c: corpus_perplexity(nll, tokens) for c, (nll, _) in scored.items()},
            ppl_wrong=corpus_perplexity(wrong, tokens),
            ratio_own_wrong=list(paired_ratio_ci(own, tokens, wrong, tokens, bootstrap_samples, seed)),
            ratio_own_none=list(paired_ratio_ci(own, tokens, none, tokens, bootstrap_samples, seed)),
        ))
    return results


def format_counterfactual(results: Sequence[CounterfactualResult]) -> str:
    """Markdown: a row per (model, region); perplexities and the two paired ratios."""
    regions = sorted({r.region for r in results})
    head = ["model", "region", "docs", "own", "none", *[f"as {g}" for g in regions], "wrong (mean)",
            "own / wrong [95% CI]", "own / none [95% CI]"]
    rows = [head]
    for r in results:
        rows.append([r.model, r.region, str(r.documents), f"{r.ppl[OWN]:.2f}", f"{r.ppl[NONE]:.2f}",
                     *["-" if g == r.region else f"{r.ppl[g]:.2f}" for g in regions],
                     f"{r.ppl_wrong:.2f}",
                     "{:.3f} [{:.3f}, {:.3f}]".format(*r.ratio_own_wrong),
                     "{:.3f} [{:.3f}, {:.3f}]".format(*r.ratio_own_none)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines) + (
        "\n\nPerplexity from the TITLE: token on, each document with its own metadata, with the "
        "metadata of a document of another region (\"as G\"), and with none. own / wrong below 1: "
        "the model reads its metadata (paired 95% bootstrap interval over documents).")
