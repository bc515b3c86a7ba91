"""The lm-evaluation-harness task: it loads offline and chooses what our scorer chooses."""

import os

import pytest
import yaml

from test_mcq import QUESTIONS, write_jsonl


def test_task_files_use_absolute_paths(tmp_path):
    from megatron_meta.cli import main

    bench = write_jsonl(tmp_path / "b.jsonl", QUESTIONS)
    out = tmp_path / "tasks"
    assert main(["evaluate", "lm-eval-task", "--benchmark", bench, "--output", str(out)]) == 0
    for setting in ("with", "without"):
        spec = yaml.safe_load((out / f"metacul_mcq_{setting}_metadata.yaml").read_text())
        data = spec["dataset_kwargs"]["data_files"]["test"]
        assert os.path.isabs(data) and os.path.exists(data)
        assert spec["task"] == f"metacul_mcq_{setting}_metadata"
        assert (spec["doc_to_text"], spec["doc_to_choice"], spec["doc_to_target"]) == (
            "context", "options", "answer")
    assert not list(out.glob("*.tmp"))


@pytest.mark.slow
def test_harness_choices_equal_ours(tmp_path, smollm2_hf, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from megatron_meta.evaluation.harness.run import run_harness
    from megatron_meta.evaluation.harness.task import write_harness_tasks
    from megatron_meta.evaluation.mcq.loglik import choose, score_options
    from megatron_meta.evaluation.mcq.data import loglik_context, read_benchmark
    from megatron_meta.metadata.synthetic import MADE_UP_BASE_URLS

    bench = write_jsonl(tmp_path / "b.jsonl", QUESTIONS)
    names = write_harness_tasks(bench, str(tmp_path / "tasks"))
    monkeypatch.chdir(tmp_path / "tasks")  # absolute data paths: any working directory works
    theirs = run_harness(smollm2_hf, str(tmp_path / "tasks"), names)
    model = AutoModelForCausalLM.from_pretrained(smollm2_hf).eval()
    tok = AutoTokenizer.from_pretrained(smollm2_hf)
    for name, base in zip(names, (MADE_UP_BASE_URLS[0], None)):
        assert sorted(theirs[name]) == [0, 1, 2, 3]
        for q in read_benchmark(bench):
            scores = score_options(model, tok, loglik_context(q, base), q.options)
            raw, norm = choose(scores, q.options)
            h = theirs[name][q.index]
            assert (h["chosen"], h["chosen_norm"]) == (raw, norm)
            assert h["logliks"] == pytest.approx([s for s, _ in scores], abs=1e-3)
