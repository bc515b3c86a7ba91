"""Chart of counterfactual metadata: per region, perplexity with own / other / no metadata."""

from __future__ import annotations

from typing import Sequence

from megatron_meta.evaluation.charts import save_png
from megatron_meta.evaluation.perplexity.counterfactual import NONE, OWN, CounterfactualResult


def plot_counterfactual(results: Sequence[CounterfactualResult], path: str, title: str = "") -> None:
    """Grouped bars per (model, region): own, wrong (mean of other regions), none."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 1.4 * len(results)), 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    names = [f"{r.model}\n{r.region}" for r in results]
    for i, (label, values) in enumerate((
            ("own metadata", [r.ppl[OWN] for r in results]),
            ("other regions' metadata", [r.ppl_wrong for r in results]),
            ("no metadata", [r.ppl[NONE] for r in results]))):
        ax.bar([j - 0.3 + 0.2 * i + 0.1 for j in range(len(results))], values, 0.2, label=label,
               color=f"C{i}", edgecolor="black", linewidth=0.5)
    low = min(min(r.ppl.values()) for r in results)
    ax.set_ylim(bottom=0.9 * low)
    ax.set_xticks(range(len(results)))
    ax.set_xticklabels(names, fontsize="small")
    ax.set_ylabel("perplexity (from TITLE:)")
    ax.set_title(title or "Counterfactual metadata: own vs other regions' vs none", fontsize="medium")
    ax.legend(fontsize="small")
    fig.tight_layout()
    save_png(fig, path)
