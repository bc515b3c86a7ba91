"""Short versus long context: perplexity of the first N body tokens, with and without metadata.

The CFG study (arXiv 2504.17562) finds that metadata helps when the prompt is too short to infer
the latent context and may hurt otherwise. For each N of a list (e.g. 16, 64, 256, 1024) every
sampled held-out document is scored on its first N tokens from ``TITLE:`` on (all of them when it
is shorter), after its metadata and after none; the paired ratio with / without, per N, shows
where metadata helps most.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence

import numpy as np

from megatron_meta.evaluation.charts import save_png
from megatron_meta.corpora.records import Document
from megatron_meta.evaluation.perplexity.evaluate import (
    Codec, ScoreFn, corpus_perplexity, encode_variants, paired_ratio_ci, sample_documents,
)

UNBOUNDED = 1 << 30


@dataclasses.dataclass
class ContextLengthResult:
    model: str
    region: str
    first_tokens: int
    """N: body tokens scored per document (fewer for shorter documents)."""
    documents: int
    tokens: int
    ppl_with: float
    ppl_without: float
    ratio: List[float]
    """with / without: [ratio, low, high], paired bootstrap over documents (< 1: metadata helps)."""


def context_length_study(score: ScoreFn, codec: Codec, sets: Dict[str, List[Document]], model: str,
                         lengths: Sequence[int], variant: str = "full", max_documents: int = 1000,
                         seed: int = 42, url_form: str = "full",
                         bootstrap_samples: int = 1000) -> List[ContextLengthResult]:
    results = []
    pooled: Dict[int, List[np.ndarray]] = {}
    for region, docs in sets.items():
        encoded = [e for e in (encode_variants(d, [variant, "none"], url_form, codec, UNBOUNDED)
                               for d in sample_documents(docs, max_documents, seed)) if e]
        for n in sorted(lengths):
            arrays = []
            for v in (variant, "none"):
                nll, count = score([e[v].sequence[:e[v].start + n] for e in encoded],
                                   [e[v].start for e in encoded])
                arrays += [np.asarray(nll, dtype=np.float64), np.asarray(count, dtype=np.float64)]
            assert np.array_equal(arrays[1], arrays[3]), "variants scored different body tokens"
            pooled.setdefault(n, []).append(np.stack(arrays))
            results.append(_result(model, region, n, arrays, seed, bootstrap_samples))
    if len(sets) > 1:
        for n, parts in sorted(pooled.items()):
            results.append(_result(model, "all", n, list(np.concatenate(parts, axis=1)), seed,
                                   bootstrap_samples))
    return results


def _result(model, region, n, arrays, seed, samples) -> ContextLengthResult:
    nll_w, tok, nll_o, _ = arrays
    return ContextLengthResult(
        model=model, region=region, first_tokens=n, documents=len(tok), tokens=int(tok.sum()),
        ppl_with=corpus_perplexity(nll_w, tok), ppl_without=corpus_perplexity(nll_o, tok),
        ratio=list(paired_ratio_ci(nll_w, tok, nll_o, tok, samples, seed)))


def format_context_length(results: Sequence[ContextLengthResult]) -> str:
    rows = [["model", "region", "first N tokens", "docs", "ppl with", "ppl without",
             "with / without [95% CI]"]]
    for r in results:
        rows.append([r.model, r.region, str(r.first_tokens), str(r.documents), f"{r.ppl_with:.2f}",
                     f"{r.ppl_without:.2f}", "{:.3f} [{:.3f}, {:.3f}]".format(*r.ratio)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines) + (
        "\n\nPerplexity of the first N tokens from TITLE: on, after the document's metadata and "
        "after none; the ratio below 1 means metadata helps at that context length.")


def plot_context_length(results: Sequence[ContextLengthResult], path: str, title: str = "") -> None:
    """Ratio with / without metadata against N (log scale), a line per (model, region)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for key in dict.fromkeys((r.model, r.region) for r in results):
        rows = sorted((r for r in results if (r.model, r.region) == key), key=lambda r: r.first_tokens)
        xs = [r.first_tokens for r in rows]
        ys = [r.ratio[0] for r in rows]
        err = [[r.ratio[0] - r.ratio[1] for r in rows], [r.ratio[2] - r.ratio[0] for r in rows]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=" / ".join(key),
                    linewidth=2.5 if key[1] == "all" else 1.2)
    ax.axhline(1.0, color="grey", linestyle=":")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("first N body tokens scored")
    ax.set_ylabel("perplexity with / without metadata")
    ax.set_title(title or "Does metadata help short or long contexts?", fontsize="medium")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    save_png(fig, path)
