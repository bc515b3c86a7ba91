"""Perplexity tables and charts: regions x (model, test variant).

Input is the result records of :mod:`megatron_meta.evaluation.perplexity.evaluate` (one or several
models). The table is markdown, readable as plain text in a terminal; the chart is a PNG of
grouped bars (one group per region, one bar per model and test variant) with the bootstrap
interval as error bars.
"""

from __future__ import annotations

import math
import os
import textwrap
from typing import Dict, List, Sequence, Tuple

from megatron_meta.evaluation.charts import save_png
from megatron_meta.errors import DataError
from megatron_meta.evaluation.perplexity.evaluate import RegionResult, paired_ratio_ci

Series = Tuple[str, str]  # (model, test variant)


def _series_and_regions(results: Sequence[RegionResult]) -> Tuple[List[Series], List[str]]:
    """Series in first-seen order (models as given, variants as scored); regions sorted."""
    series: List[Series] = []
    for r in results:
        if (r.model, r.variant) not in series:
            series.append((r.model, r.variant))
    return series, sorted({r.region for r in results})


def _index(results: Sequence[RegionResult]) -> Dict[Tuple[str, str, str], RegionResult]:
    table: Dict[Tuple[str, str, str], RegionResult] = {}
    for r in results:
        key = (r.model, r.variant, r.region)
        if key in table:
            raise DataError(
                f"two results for model {r.model!r}, variant {r.variant!r}, region {r.region!r}; "
                "give each model a distinct --label"
            )
        table[key] = r
    return table


def series_name(model: str, variant: str) -> str:
    return f"{model} / test {variant}"


def _markdown(rows: List[List[str]]) -> List[str]:
    """Aligned markdown table: first row header, first column left-aligned, others right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    rule = ["-" * widths[0]] + ["-" * (w - 1) + ":" for w in widths[1:]]
    lines = []
    for row in [rows[0], rule] + rows[1:]:
        cells = [c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def format_table(results: Sequence[RegionResult]) -> str:
    """Markdown table: a row per region, a column per (model, test variant): ppl [95% CI].

    When the results hold paired ratios to ``none`` (``evaluate perplexity`` with ``none``
    among the variants), a second table gives, per model, how much metadata in the test text
    changes perplexity on the same documents.
    """
    if not results:
        raise DataError("no perplexity results to report")
    series, regions = _series_and_regions(results)
    table = _index(results)
    rows = [["region"] + [series_name(m, v) for m, v in series]]
    for region in regions:
        row = [region]
        for model, variant in series:
            r = table.get((model, variant, region))
            row.append("-" if r is None else f"{r.ppl:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]")
        rows.append(row)
    docs = sorted({(r.region, r.documents) for r in results})
    lines = _markdown(rows)
    lines += ["", "Perplexity from the TITLE: token on, with 95% bootstrap interval; documents per "
              "region: " + ", ".join(f"{region}: {n}" for region, n in docs) + "."]
    lines += _model_comparison(results, regions, table)
    paired = [(m, v) for m, v in series if any(
        table.get((m, v, g)) is not None and table[(m, v, g)].ratio_to_none is not None
        for g in regions)]
    if paired:
        rows = [["region"] + [f"{m}: test {v} / test none" for m, v in paired]]
        for region in regions:
            row = [region]
            for model, variant in paired:
                r = table.get((model, variant, region))
                row.append("-" if r is None or r.ratio_to_none is None else
                           f"{r.ratio_to_none:.3f} [{r.ratio_ci_low:.3f}, {r.ratio_ci_high:.3f}]")
            rows.append(row)
        lines += ["", *_markdown(rows), "",
                  "Perplexity with metadata in the test text over without, on the same documents "
                  "(below 1: metadata helps), with paired 95% bootstrap interval."]
    return "\n".join(lines)


def _model_comparison(
    results: Sequence[RegionResult], regions: List[str],
    table: Dict[Tuple[str, str, str], RegionResult],
) -> List[str]:
    """The paper's headline: a metadata model tested with its metadata over a model trained
    without metadata tested without, paired on the same documents (when both were scored on
    the same documents and the results keep per-document scores)."""
    trained = {r.model: r.train_variant for r in results}
    baselines = [m for m, v in trained.items() if v == "none"]
    pairs = [((m, v), (b, "none")) for m, v in trained.items() if v not in (None, "none")
             for b in baselines]
    rows = []
    for (ma, va), (mb, vb) in pairs:
        row = [f"{ma} (test {va}) / {mb} (test {vb})"]
        for region in regions:
            a, b = table.get((ma, va, region)), table.get((mb, vb, region))
            if (a is None or b is None or a.document_nll is None or b.document_nll is None
                    or a.document_ids != b.document_ids):
                row.append("-")
                continue
            ratio, low, high = paired_ratio_ci(
                a.document_nll, a.document_tokens, b.document_nll, b.document_tokens)
            row.append(f"{ratio:.3f} [{low:.3f}, {high:.3f}]")
        if set(row[1:]) != {"-"}:
            rows.append(row)
    if not rows:
        return []
    return ["", *_markdown([["comparison"] + regions] + rows), "",
            "Metadata model over baseline, each tested in its training format, on the same "
            "documents (below 1: the metadata model is better), with paired 95% bootstrap interval."]


def plot_chart(results: Sequence[RegionResult], path: str, title: str = "") -> None:
    """Grouped bar chart with interval error bars, written as PNG (temporary name, then rename)."""
    # The object-oriented API with the Agg canvas: no global backend switch, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series, regions = _series_and_regions(results)
    table = _index(results)
    fig = Figure(figsize=(max(6.0, 1.6 * len(regions) * max(1, len(series)) / 2.5), 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(series))
    models = list(dict.fromkeys(m for m, _ in series))
    variants = list(dict.fromkeys(v for _, v in series))
    hatches = ["", "//", "..", "xx", "\\\\", "++", "oo"]
    lows: List[float] = []
    for i, (model, variant) in enumerate(series):
        xs, heights, low_err, high_err = [], [], [], []
        for j, region in enumerate(regions):
            r = table.get((model, variant, region))
            if r is None or not math.isfinite(r.ppl):
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            heights.append(r.ppl)
            lows.append(r.ci_low if math.isfinite(r.ci_low) else r.ppl)
            low_err.append(max(0.0, r.ppl - r.ci_low) if math.isfinite(r.ci_low) else 0.0)
            high_err.append(max(0.0, r.ci_high - r.ppl) if math.isfinite(r.ci_high) else 0.0)
        # Colour tells the model apart, hatching the test variant.
        ax.bar(
            xs, heights, width, yerr=[low_err, high_err], capsize=3,
            label=series_name(model, variant), color=f"C{models.index(model) % 10}",
            hatch=hatches[variants.index(variant) % len(hatches)], edgecolor="black",
            linewidth=0.5, alpha=1.0 if variants.index(variant) == 0 else 0.6,
        )
    if lows and min(lows) > 0.3 * ax.get_ylim()[1]:
        # Differences between variants are a few percent: start the axis near the lowest interval
        # so they are visible (the axis labels show where it starts).
        ax.set_ylim(bottom=0.9 * min(lows))
    ax.set_xticks(range(len(regions)))
    ax.set_xticklabels(regions)
    ax.set_ylabel("perplexity (from TITLE:, lower is better)")
    ax.set_title(textwrap.fill(title or "Held-out perplexity per region, with and without metadata", 70),
                 fontsize="medium")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    save_png(fig, path)


def write_report(results: Sequence[RegionResult], output_prefix: str, title: str = "") -> str:
    """Write ``{prefix}.md`` and ``{prefix}.png``; returns the table text."""
    text = format_table(results)
    os.makedirs(os.path.dirname(os.path.abspath(output_prefix)), exist_ok=True)
    tmp = output_prefix + ".md.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        if title:
            f.write(f"# {title}\n\n")
        f.write(text + "\n\n![perplexity chart](" + os.path.basename(output_prefix) + ".png)\n")
    os.replace(tmp, output_prefix + ".md")
    plot_chart(results, output_prefix + ".png", title)
    return text
