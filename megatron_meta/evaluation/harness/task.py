"""A local lm-evaluation-harness task for the benchmark, one per metadata setting.

``evaluate lm-eval-task`` writes, into one folder, the questions with their full contexts already
rendered (``{name}_{setting}.jsonl``: ``context``, ``options``, ``answer``) and a task YAML per
setting that reads them by absolute path (the harness resolves relative data paths against the
working directory, not the YAML's). The contexts are exactly those of ``evaluate mcq --scoring
loglik`` (repeat 0), so the harness and our scorer see the same text:

    lm_eval --model hf --model_args pretrained=DIR,dtype=float32 --include_path TASKDIR \\
        --tasks metacul_mcq_with_metadata,metacul_mcq_without_metadata --device cpu
"""

from __future__ import annotations

import json
import os
from typing import List, Optional

from megatron_meta.errors import ConfigError
from megatron_meta.evaluation.mcq.data import loglik_context, read_benchmark
from megatron_meta.metadata.synthetic import MADE_UP_BASE_URLS

_YAML = """\
# Written by `megatron-meta evaluate lm-eval-task` from {benchmark}
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: options
doc_to_target: answer
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def task_names(name: str) -> List[str]:
    return [f"{name}_with_metadata", f"{name}_without_metadata"]


def write_harness_tasks(benchmark: str, output: str, name: str = "metacul_mcq",
                        base_url: Optional[str] = None) -> List[str]:
    """Write the data and YAML of both tasks into ``output``; returns the task names."""
    if not name.replace("_", "").isalnum():
        raise ConfigError(f"--name {name!r}: use letters, digits and underscores only")
    questions = read_benchmark(benchmark)
    os.makedirs(output, exist_ok=True)
    names = task_names(name)
    for task, url in zip(names, (base_url or MADE_UP_BASE_URLS[0], None)):
        data = os.path.abspath(os.path.join(output, f"{task}.jsonl"))
        with open(data + ".tmp", "w", encoding="utf-8") as f:
            for q in questions:
                f.write(json.dumps({"id": q.index, "context": loglik_context(q, url),
                                    "options": list(q.options), "answer": q.answer,
                                    "country": q.country, "continent": q.continent}) + "\n")
        yaml = os.path.join(output, f"{task}.yaml")
        with open(yaml + ".tmp", "w", encoding="utf-8") as f:
            f.write(_YAML.format(benchmark=os.path.abspath(benchmark), task=task,
                                 data=json.dumps(data)))
        os.replace(data + ".tmp", data)
        os.replace(yaml + ".tmp", yaml)
    return names
