"""``study report``: every model of the study and its results, from the outputs on disk.

Writes ``report/study.md`` (models, training state and final loss, perplexity per region with
and without metadata with 95% intervals, MCQ accuracy where present) and ``report/perplexity``
(.md, .png) through the evaluation stage's report.
"""

from __future__ import annotations

import glob
import json
import os
from typing import List

from megatron_meta.cluster import run_state
from megatron_meta.study.kinds import run_dir
from megatron_meta.study.runs import Study


def _final_loss(save: str):
    path = os.path.join(save, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return rows[-1].get("loss") if rows else None


def _verdict(label: str, a, b) -> str:
    """One sentence: a's perplexity over b's on the same documents, and whether it is an effect."""
    from megatron_meta.evaluation.perplexity.evaluate import paired_ratio_ci

    if (
        a is None
        or b is None
        or a.document_nll is None
        or b.document_nll is None
        or a.document_ids != b.document_ids
    ):
        return f"- {label}: not comparable (not scored on the same documents)"
    ratio, low, high = paired_ratio_ci(
        a.document_nll, a.document_tokens, b.document_nll, b.document_tokens
    )
    if high < 1:
        word = "yes, lower perplexity"
    elif low > 1:
        word = "no, higher perplexity"
    else:
        word = "no measurable effect: the interval includes 1 (no effect)"
    return f"- {label}: {word}; ratio {ratio:.3f} [95% {low:.3f}, {high:.3f}]"


def findings(study: Study, rows) -> List[str]:
    """The paper's questions in words, each with its paired 95% interval."""
    table = {(r.model, r.variant, r.region): r for r in rows}
    out = ["", "## Findings (paired on the same documents; below 1 favours the first model)", ""]
    trained = {r.model: r.train_variant for r in rows}
    regions = sorted({r.region for r in rows})
    metadata = [
        run
        for run in study.runs
        if trained.get(run.name) not in (None, "none") and not run.exclude and not run.region
        # scored in its own training format (an ablation's variant may not have been tested)
        and any((run.name, trained[run.name], g) in table for g in regions)
    ]
    baselines = [
        run
        for run in study.runs
        if trained.get(run.name) == "none" and not run.exclude and not run.region
    ]
    for m in metadata:
        for b in baselines:
            for g in regions:
                out.append(
                    _verdict(
                        f"{m.name} (with its metadata) beats {b.name} on {g}",
                        table.get((m.name, trained[m.name], g)),
                        table.get((b.name, "none", g)),
                    )
                )
    for run in study.runs:
        if run.exclude:
            ref = next((m for m in metadata if trained.get(m.name) == trained.get(run.name)), None)
            if ref is not None:
                v = trained.get(run.name)
                out.append(
                    _verdict(
                        f"{run.name} (never saw {run.exclude}) beats {ref.name} on {run.exclude}",
                        table.get((run.name, v, run.exclude)),
                        table.get((ref.name, v, run.exclude)),
                    )
                )
    return out if len(out) > 4 else []


def _interval_words(ratio, low, high) -> str:
    if high < 1:
        word = "yes"
    elif low > 1:
        word = "no, the wrong metadata is better"
    else:
        word = "no measurable effect: the interval includes 1 (no effect)"
    return f"{word}; own / wrong {ratio:.3f} [95% {low:.3f}, {high:.3f}]"


def counterfactual_section(study: Study) -> List[str]:
    """Does a document's own metadata beat another region's? (``evaluate counterfactual``)."""
    from megatron_meta.evaluation.perplexity.counterfactual import CounterfactualResult, format_counterfactual

    paths = sorted(glob.glob(study.path_in("eval", "counterfactual", "*.json")))
    results = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            results += [CounterfactualResult(**r) for r in json.load(f)["results"]]
    if not results:
        return ["", "- own metadata vs another region's: no counterfactual stage in this study"]
    out = ["", "## Counterfactual metadata (own vs another region's vs none)", "",
           format_counterfactual(results), "",
           "## Findings: does a document's own metadata beat another region's?", ""]
    for r in results:
        out.append(f"- {r.model} on {r.region}: {_interval_words(*r.ratio_own_wrong)}")
    return out


def mcq_section(study: Study) -> List[str]:
    """MCQ accuracy per model and setting, per continent (``evaluate mcq`` records)."""
    from megatron_meta.evaluation.mcq.score import read_records
    from megatron_meta.evaluation.mcq.report import write_mcq_report

    paths = sorted(glob.glob(study.path_in("eval", "mcq", "*.json")))
    records = [r for p in paths for r in read_records(p)]
    if not records:
        return []
    benchmarks = set()
    for p in paths:  # which file was scored: the study's own news set or the paper's
        with open(p, encoding="utf-8") as f:
            benchmarks.add(str(json.load(f).get("config", {}).get("benchmark")))
    prefix = study.path_in("report", "mcq")
    text = write_mcq_report(records, prefix, f"Study {study.name}: MCQ accuracy")
    return ["", "## MCQ benchmark accuracy (%, 95% bootstrap intervals)", "",
            f"Benchmark: {', '.join(sorted(benchmarks))}", "", text, "", f"Chart: {prefix}.png"]


def study_report(study: Study) -> str:
    from megatron_meta.evaluation.perplexity.evaluate import read_results
    from megatron_meta.evaluation.perplexity.report import format_table, write_report

    lines: List[str] = [
        f"# Study {study.name}",
        "",
        f"Protocol: {study.protocol} "
        f"({'the code of the paper' if study.protocol == 'paper' else 'our defaults'}; "
        "README, \"Our defaults and the paper protocol\").",
        "",
        "## Models",
        "",
        "| run | trained on | variant | model | state | iteration | final loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in study.runs:
        save = run_dir(study, run)
        state = run_state.read_state(save)
        scope = run.region or (f"all but {run.exclude}" if run.exclude else "all regions")
        loss = _final_loss(save)
        lines.append(
            f"| {run.name} | {scope} | {run.variant or run.train.get('variant', 'full')} | "
            f"{run.model or run.train.get('model', '-')} | {state.state if state else 'not started'} | "
            f"{state.iteration if state else '-'} | {'-' if loss is None else f'{loss:.3f}'} |"
        )
    results = sorted(glob.glob(study.path_in("eval", "perplexity", "*.json")))
    rows = [r for path in results for r in read_results(path)]
    if rows:
        prefix = study.path_in("report", "perplexity")
        write_report(rows, prefix, f"Study {study.name}: held-out perplexity per region")
        lines += [
            "",
            "## Perplexity per region (95% bootstrap intervals)",
            "",
            "Test variant `full` has the document's own metadata, `none` none.",
            "",
            format_table(rows),
            "",
            f"Chart: {prefix}.png",
        ]
        if len({r.model for r in rows}) > 1:  # the paper's cross-region comparisons
            from megatron_meta.evaluation.perplexity.matrix import write_matrix

            lines += ["", write_matrix(rows, prefix, f"Study {study.name}")]
        lines += findings(study, rows)
    lines += counterfactual_section(study)
    lines += mcq_section(study)
    text = "\n".join(lines) + "\n"
    out = study.path_in("report", "study.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(out + ".tmp", out)
    return text
