"""Tables and a chart from ``evaluate mcq`` records: accuracy per model, scoring, metadata setting,
continent and country, with 95% bootstrap intervals over questions.

Accuracy is correct over parsed answers (the authors skip unparseable generations); the number of
unparseable answers is reported beside it. Repeats of a question (base URLs, samples) are kept
together when resampling, so the interval is over questions, not over repeats.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Dict, List, Sequence, Tuple

import numpy as np

from megatron_meta.evaluation.charts import save_png

Key = Tuple[str, str, str]  # (model, scoring, setting)


def bootstrap_accuracy(correct: np.ndarray, parsed: np.ndarray, samples: int = 1000,
                       seed: int = 42) -> Tuple[float, float, float]:
    """(accuracy, low, high): per-question correct and parsed counts, resampled by question."""
    correct = np.asarray(correct, dtype=np.float64)
    parsed = np.asarray(parsed, dtype=np.float64)
    if parsed.sum() == 0:
        return float("nan"), float("nan"), float("nan")
    acc = float(correct.sum() / parsed.sum())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(correct), size=(samples, len(correct)))
    draws = correct[idx].sum(1) / np.maximum(parsed[idx].sum(1), 1.0)
    low, high = np.percentile(draws, [2.5, 97.5])
    return acc, float(low), float(high)


def summarize(records: Sequence[Dict], group: str = "", field: str = "correct",
              samples: int = 1000, seed: int = 42) -> Dict[Tuple, Dict]:
    """(model, scoring, setting[, group value]) -> accuracy, interval, questions, unparseable."""
    per_q: Dict[Tuple, Dict[int, List[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0]))
    for r in records:
        if field not in r:
            continue
        key = (r["model"], r["scoring"], r["setting"]) + ((r[group],) if group else ())
        counts = per_q[key][r["question"]]
        parsed = r.get("parsed", True)
        counts[0] += int(bool(r[field]) and parsed)
        counts[1] += int(parsed)
        counts[2] += int(not parsed)
    out = {}
    for key, questions in per_q.items():
        arr = np.array(list(questions.values()), dtype=np.float64)
        acc, low, high = bootstrap_accuracy(arr[:, 0], arr[:, 1], samples, seed)
        out[key] = dict(acc=acc, low=low, high=high, questions=len(questions),
                        answers=int(arr[:, 1].sum() + arr[:, 2].sum()), unparseable=int(arr[:, 2].sum()))
    return out


def _cell(s: Dict) -> str:
    return "-" if s is None else f"{100 * s['acc']:.1f} [{100 * s['low']:.1f}, {100 * s['high']:.1f}]"


def _table(rows: List[List[str]]) -> List[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(row)) + " |")
        if n == 0:
            lines.append("| " + " | ".join("-" * w for w in widths) + " |")
    return lines


def format_tables(records: Sequence[Dict]) -> str:
    """Markdown: overall, per continent and per country, one column per (model, scoring, setting)."""
    overall = summarize(records)
    series = sorted(overall)
    head = [f"{m} {s} / metadata {st}" for m, s, st in series]
    rows = [["", *head]]
    rows.append(["accuracy % [95% CI]", *(_cell(overall[k]) for k in series)])
    if any(k[1] == "loglik" for k in series):
        norm = summarize(records, field="correct_norm")
        rows.append(["length-normalized %", *(_cell(norm.get(k)) for k in series)])
    rows.append(["questions", *(str(overall[k]["questions"]) for k in series)])
    rows.append(["answers (all repeats)", *(str(overall[k]["answers"]) for k in series)])
    rows.append(["unparseable", *(str(overall[k]["unparseable"]) for k in series)])
    lines = ["## Overall", "", *_table(rows)]
    for group, title in (("continent", "Per continent"), ("country", "Per country")):
        stats = summarize(records, group)
        values = sorted({k[3] for k in stats})
        rows = [[group, *head]] + [[v, *(_cell(stats.get(k + (v,))) for k in series)] for v in values]
        lines += ["", f"## {title} (accuracy %, 95% bootstrap interval over questions)", "", *_table(rows)]
    from megatron_meta.evaluation.mcq.paper_aggregate import format_paper_table

    paper = format_paper_table(records)  # generation records carry the authors' parse too
    return "\n".join(lines + (["", paper] if paper else []))


def plot_continents(records: Sequence[Dict], path: str, title: str = "") -> None:
    """Grouped bars: accuracy per continent, one bar per (model, scoring, setting), with intervals."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    stats = summarize(records, "continent")
    series = sorted({k[:3] for k in stats})
    continents = sorted({k[3] for k in stats})
    fig = Figure(figsize=(max(6.0, 1.2 * len(continents) * max(1, len(series)) / 2), 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(series))
    for i, key in enumerate(series):
        xs, ys, lo, hi = [], [], [], []
        for j, c in enumerate(continents):
            s = stats.get(key + (c,))
            if s is None or not np.isfinite(s["acc"]):
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(100 * s["acc"])
            lo.append(100 * (s["acc"] - s["low"]))
            hi.append(100 * (s["high"] - s["acc"]))
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=" / ".join(key),
               hatch="" if key[2] == "with" else "//", edgecolor="black", linewidth=0.5)
    ax.axhline(25, color="grey", linestyle=":", linewidth=1, label="chance (25%)")
    ax.set_xticks(range(len(continents)))
    ax.set_xticklabels(continents)
    ax.set_ylabel("accuracy % (95% bootstrap CI)")
    ax.set_title(title or "Localized MCQ accuracy per continent", fontsize="medium")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    save_png(fig, path)


def write_mcq_report(records: Sequence[Dict], prefix: str, title: str = "") -> str:
    """``{prefix}.md`` and ``{prefix}.png``; returns the tables."""
    text = format_tables(records)
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    with open(prefix + ".md.tmp", "w", encoding="utf-8") as f:
        f.write((f"# {title}\n\n" if title else "") + text +
                f"\n\n![accuracy per continent]({os.path.basename(prefix)}.png)\n")
    os.replace(prefix + ".md.tmp", prefix + ".md")
    plot_continents(records, prefix + ".png", title)
    return text
