"""Region x region matrix: every model on every region's test set, with and without metadata.

Input is the records of ``evaluate perplexity`` for any set of models (one results file each).
Output: a table and a heatmap per test variant (rows: models, columns: test regions), and the
paper's comparisons, found from model labels:

- ``local-<region>``: trained on one region; ``global``: on all; ``loo-<region>``: on all but one
  (anything after the region, e.g. ``local-africa-none``, is free text);
- local vs global: a local model over the global one with the same training variant, on its own
  region; left-out region: a leave-one-out model over the global one on the region it never saw;
- with vs without metadata: each model's paired ratio, test ``full`` over test ``none``.

Ratios are paired over the same documents (bootstrap interval) where both results keep them.
"""

from __future__ import annotations

import math
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

from megatron_meta.evaluation.charts import save_png
from megatron_meta.evaluation.perplexity.evaluate import RegionResult, paired_ratio_ci
from megatron_meta.metadata.regions import slug

_ROLE = re.compile(r"^(local|loo)[-_:]([a-z0-9]+)")


def model_role(label: str) -> Tuple[Optional[str], Optional[str]]:
    """(role, region slug) from a label: ('local', 'africa'), ('global', None) or (None, None)."""
    key = label.strip().lower()
    if key.startswith("global"):
        return "global", None
    m = _ROLE.match(key)
    return (m.group(1), m.group(2)) if m else (None, None)


def _table(rows: List[List[str]]) -> List[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    out.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return out


def _ratio(a: Optional[RegionResult], b: Optional[RegionResult]) -> str:
    if a is None or b is None:
        return "-"
    if a.document_nll is not None and b.document_nll is not None and a.document_ids == b.document_ids:
        r, low, high = paired_ratio_ci(a.document_nll, a.document_tokens, b.document_nll, b.document_tokens)
        return f"{r:.3f} [{low:.3f}, {high:.3f}]"
    return f"{a.ppl / b.ppl:.3f}"


def format_matrix(results: Sequence[RegionResult]) -> str:
    models = list(dict.fromkeys(r.model for r in results))
    regions = sorted({r.region for r in results})
    variants = list(dict.fromkeys(r.variant for r in results))
    index: Dict[Tuple[str, str, str], RegionResult] = {(r.model, r.variant, r.region): r for r in results}
    lines: List[str] = []
    for v in variants:
        rows = [["model (trained on)", *regions]]
        for m in models:
            train = next((r.train_variant for r in results if r.model == m), None)
            rows.append([f"{m} ({train or '?'})",
                         *[f"{index[(m, v, g)].ppl:.2f}" if (m, v, g) in index else "-" for g in regions]])
        lines += ["", f"### Test set with variant `{v}` (perplexity; rows: models, columns: test regions)",
                  "", *_table(rows)]
    lines += _comparisons(results, index, regions)
    return "\n".join(lines).lstrip()


def _comparisons(results, index, regions) -> List[str]:
    trained = {r.model: r.train_variant for r in results}
    roles = {m: model_role(m) for m in trained}
    globals_ = {trained[m]: m for m, (role, _) in roles.items() if role == "global"}
    rows = [["comparison", "test region", "ratio [95% CI]"]]
    for m, (role, reg) in roles.items():
        if role not in ("local", "loo"):
            continue
        g = globals_.get(trained[m])
        region = next((x for x in regions if slug(x) == reg), None)
        if g is None or region is None:
            continue
        variant = trained[m] or "full"
        what = "local / global" if role == "local" else "left-out region: leave-one-out / global"
        rows.append([f"{m} / {g} ({what}, test {variant})", region,
                     _ratio(index.get((m, variant, region)), index.get((g, variant, region)))])
    for m in trained:
        for region in regions:
            r = index.get((m, "full", region))
            if r is not None and r.ratio_to_none is not None:
                rows.append([f"{m}: test full / test none (with vs without)", region,
                             f"{r.ratio_to_none:.3f} [{r.ratio_ci_low:.3f}, {r.ratio_ci_high:.3f}]"])
    if len(rows) == 1:
        return []
    return ["", "### Comparisons (below 1: the first is better)", "", *_table(rows)]


def plot_matrix(results: Sequence[RegionResult], path: str, title: str = "") -> None:
    """One heatmap per test variant; colour = perplexity over the best model on that region."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    models = list(dict.fromkeys(r.model for r in results))
    regions = sorted({r.region for r in results})
    variants = list(dict.fromkeys(r.variant for r in results))
    fig = Figure(figsize=(2.2 + 1.3 * len(regions) * len(variants), 1.2 + 0.45 * len(models)), dpi=120)
    FigureCanvasAgg(fig)
    for k, v in enumerate(variants):
        ax = fig.add_subplot(1, len(variants), k + 1)
        grid = np.full((len(models), len(regions)), np.nan)
        for r in results:
            if r.variant == v and math.isfinite(r.ppl):
                grid[models.index(r.model), regions.index(r.region)] = r.ppl
        rel = grid / np.nanmin(grid, axis=0, keepdims=True)
        ax.imshow(rel, cmap="viridis_r", aspect="auto")
        for i in range(len(models)):
            for j in range(len(regions)):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize="small",
                            color="white" if rel[i, j] > np.nanmean(rel) else "black")
        ax.set_xticks(range(len(regions)))
        ax.set_xticklabels(regions, rotation=30, fontsize="small")
        ax.set_yticks(range(len(models)))
        ax.set_yticklabels(models if k == 0 else [""] * len(models), fontsize="small")
        ax.set_title(f"test {v}", fontsize="medium")
    fig.suptitle(title or "Perplexity: models x test regions (darker: closer to the best)",
                 fontsize="medium")
    fig.tight_layout()
    save_png(fig, path)


def write_matrix(results: Sequence[RegionResult], prefix: str, title: str = "") -> str:
    """``{prefix}.matrix.md`` and ``{prefix}.matrix.png``; returns the text."""
    text = format_matrix(results)
    with open(prefix + ".matrix.md.tmp", "w", encoding="utf-8") as f:
        f.write(text + f"\n\n![matrix]({os.path.basename(prefix)}.matrix.png)\n")
    os.replace(prefix + ".matrix.md.tmp", prefix + ".matrix.md")
    plot_matrix(results, prefix + ".matrix.png", title)
    return text
