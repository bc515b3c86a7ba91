"""Perplexity under ``--protocol paper``: the authors' 12_perplexity_eval.py (FACTS 1a).

* A document is BOS + its formatted text, the whole sequence truncated to ``seq_length`` (1,024)
  tokens, so a metadata variant keeps fewer body tokens than ``none``.
* The loss is counted from the token AFTER the first ``TITLE:`` token sequence (the tokens of
  ``"TITLE:"`` encoded alone); where it is not found, every token after BOS counts, as theirs.
* The documents: ``np.random.default_rng(seed).choice(n, max_documents, replace=False)`` in that
  order (all when there are fewer); the bootstrap continues with the same generator, resampling
  documents with pooled tokens, percentile interval.
* Test sets: every region, plus ``All`` (the regions' test documents interleaved like the
  training data: one document per region a group, up to the smallest region, so 4 x 2,500 =
  10,000 documents) and, with more than two regions, ``no-{region}`` (the others interleaved).

Our default differs in two places, on purpose (README, protocol table): every variant is scored on
the same body tokens (so "with vs without metadata" compares the same text), and the loss starts
at the ``TITLE:`` token itself.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from megatron_meta.corpora.records import Document
from megatron_meta.metadata.formatting import format_document
from megatron_meta.tokenizer.documents import Codec, Encoded

ALL = "All"


def encode_paper(doc: Document, variant: str, url_form: str, codec: Codec, bos: int,
                 seq_length: int) -> Optional[Encoded]:
    """BOS + formatted ids cut to ``seq_length``; ``start``: the first scored token."""
    ids = ([bos] + list(codec.tokenize(format_document(doc, variant, url_form))))[:seq_length]
    title = list(codec.tokenize("TITLE:"))
    pos = next((i for i in range(len(ids) - len(title) + 1) if ids[i:i + len(title)] == title), None)
    start = 1 if pos is None else pos + 1
    return Encoded(ids, start) if start < len(ids) else None


def paper_sample(n: int, max_documents: int, rng: np.random.Generator) -> List[int]:
    """Indices of the documents scored, in the authors' order."""
    if n <= max_documents:
        return list(range(n))
    return [int(i) for i in rng.choice(n, size=max_documents, replace=False)]


def paper_bootstrap(nll: Sequence[float], tokens: Sequence[int], iters: int, confidence: float,
                    rng: np.random.Generator) -> Tuple[float, float]:
    """Percentile interval of pooled perplexity over resampled documents (their loop)."""
    nll, tokens = np.asarray(nll, dtype=np.float64), np.asarray(tokens, dtype=np.int64)
    n = len(nll)
    if n == 0:
        return float("nan"), float("nan")
    draws = np.empty(iters)
    for i in range(iters):
        idx = rng.integers(0, n, size=n)
        draws[i] = np.exp(nll[idx].sum() / tokens[idx].sum())
    alpha = (1.0 - confidence) / 2.0
    return float(np.quantile(draws, alpha)), float(np.quantile(draws, 1.0 - alpha))


def paper_test_sets(sets: Dict[str, List[Document]], seed: int) -> Dict[str, List[Document]]:
    """The regions' sets plus ``All`` and the leave-one-out sets, interleaved like training."""
    from megatron_meta.training.interleave import interleaved_order

    def interleave(names: List[str]) -> List[Document]:
        order = interleaved_order([len(sets[r]) for r in names], names, seed)
        return [sets[names[r]][g] for r, g in order]

    regions = [r for r in sets if r != "all"]
    out = dict(sets)
    if len(regions) > 1:
        out[ALL] = interleave(regions)
    if len(regions) > 2:
        for left_out in regions:
            out[f"no-{left_out}"] = interleave([r for r in regions if r != left_out])
    return out
