"""The authors' MCQ aggregation (their 19_sft_analyse.py and the tables after it; FACTS 1a).

Over the generation records of a grid of (model, setting) pairs, parsed with the authors' parser:

1. per base URL (repeat ``r``: the with-metadata run on URL ``r`` and the no-metadata run that
   the authors filed under the same URL), keep the questions that EVERY pair answered;
2. accuracy per (URL, continent) on those questions;
3. per continent, the mean over URLs with +-1.96 sd/sqrt(n) (sample sd over the n URLs);
4. overall: per URL, correct over all kept questions (each continent weighted by its kept
   questions), then the same mean and interval.

Beside each row: what a model that always answers "A" scores on the same questions (the released
file has the right answer at A in 780 of 800), so position bias is not read as knowledge.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Dict, List, Sequence, Tuple

Pair = Tuple[str, str]  # (model, setting)


def _mean_ci(values: Sequence[float]) -> Tuple[float, float]:
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, 1.96 * sd / math.sqrt(n)


def paper_aggregate(records: Sequence[Dict]) -> Dict[Pair, Dict[str, Dict[str, float]]]:
    """(model, setting) -> continent (and ``overall``) -> mean, ci, urls, questions, always_a."""
    gen = [r for r in records if r.get("scoring") == "generate" and "chosen_paper" in r]
    pairs = sorted({(r["model"], r["setting"]) for r in gen})
    by_key = {(r["model"], r["setting"], r["repeat"], r["question"]): r for r in gen}
    slots = sorted({r["repeat"] for r in gen})
    continent_of = {r["question"]: r["continent"] for r in gen}
    out: Dict[Pair, Dict[str, Dict[str, float]]] = {}
    # per slot: the questions every pair answered
    common: Dict[int, List[int]] = {}
    for slot in slots:
        common[slot] = sorted(
            q for q in continent_of
            if all((m, s, slot, q) in by_key and by_key[(m, s, slot, q)]["chosen_paper"] is not None
                   for m, s in pairs)
        )
    continents = sorted(set(continent_of.values()))
    for model, setting in pairs:
        acc: Dict[str, List[float]] = defaultdict(list)
        always_a: Dict[str, List[float]] = defaultdict(list)
        counts: Dict[str, List[int]] = defaultdict(list)
        for slot in slots:
            rows = [by_key[(model, setting, slot, q)] for q in common[slot]]
            for group in continents + ["overall"]:
                kept = [r for r in rows if group == "overall" or r["continent"] == group]
                if not kept:
                    continue
                acc[group].append(sum(bool(r["correct_paper"]) for r in kept) / len(kept))
                always_a[group].append(sum(r["answer"] == 0 for r in kept) / len(kept))
                counts[group].append(len(kept))
        table = {}
        for group in continents + ["overall"]:
            mean, ci = _mean_ci(acc[group])
            table[group] = dict(mean=mean, ci=ci, urls=len(acc[group]),
                                questions=sum(counts[group]) / max(1, len(counts[group])),
                                always_a=_mean_ci(always_a[group])[0])
        out[(model, setting)] = table
    return out


def format_paper_table(records: Sequence[Dict]) -> str:
    """Markdown: the paper protocol's accuracy per pair and continent, and the always-"A" line."""
    agg = paper_aggregate(records)
    if not agg:
        return ""
    groups = sorted({g for table in agg.values() for g in table if g != "overall"}) + ["overall"]
    lines = [
        "## Paper protocol (the authors' parser and aggregation)",
        "",
        "Accuracy % per continent: mean over base URLs +- 1.96 sd/sqrt(n), on the questions every "
        "(model, setting) pair of this grid answered under that URL. `always A`: a model that "
        "always answers A, on the same questions.",
        "",
        "| model | metadata | " + " | ".join(groups) + " |",
        "|---|---|" + "---|" * len(groups),
    ]
    for (model, setting), table in sorted(agg.items()):
        cells = [f"{100 * table[g]['mean']:.1f} +- {100 * table[g]['ci']:.1f}" if g in table else "-"
                 for g in groups]
        lines.append(f"| {model} | {setting} | " + " | ".join(cells) + " |")
    first = next(iter(agg.values()))
    cells = [f"{100 * first[g]['always_a']:.1f}" if g in first else "-" for g in groups]
    lines.append("| always A | - | " + " | ".join(cells) + " |")
    return "\n".join(lines)
