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
from megatron_meta.study.spec import Study


def _final_loss(save: str):
    path = os.path.join(save, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return rows[-1].get("loss") if rows else None


def study_report(study: Study) -> str:
    from megatron_meta.evaluation.perplexity import read_results
    from megatron_meta.evaluation.report import format_table, write_report

    lines: List[str] = [f"# Study {study.name}", "", "## Models", "",
                        "| run | trained on | variant | model | state | iteration | final loss |",
                        "|---|---|---|---|---|---|---|"]
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
        lines += ["", "## Perplexity per region (95% bootstrap intervals)", "",
                  "Test variant `full` has the document's own metadata, `none` none.", "",
                  format_table(rows), "", f"Chart: {prefix}.png"]
    mcq = sorted(glob.glob(study.path_in("eval", "mcq", "*.json")))
    if mcq:
        lines += ["", "## MCQ", ""]
        for path in mcq:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            lines.append(f"- {os.path.basename(path)[:-5]}: {json.dumps(data.get('summary', data))[:400]}")
    text = "\n".join(lines) + "\n"
    out = study.path_in("report", "study.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(out + ".tmp", out)
    return text
