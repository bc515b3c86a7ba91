"""A study is checked whole before anything runs (megatron_meta/study/preflight.py); paths in a
study file are relative to it; the demo's own MCQ set built from held-out news (evaluate make-mcq)."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from megatron_meta.errors import ConfigError
from megatron_meta.study.graph import build_graph
from megatron_meta.study.preflight import check_study, parse_problems
from megatron_meta.study.spec import load_study
from training_support import REPO, write_corpus

COUNTRIES = {"Africa": ["ng", "ke"], "Asia": ["in", "pk"], "Europe": ["gb", "ie"]}


def add_holdout(manifest: str, per_country: int = 3) -> None:
    """Give a test manifest held-out test documents (as preprocess writes them)."""
    with open(manifest) as f:
        raw = json.load(f)
    folder = os.path.dirname(manifest)
    for region, codes in COUNTRIES.items():
        path = os.path.join(folder, f"corpus_test_{region}.jsonl")
        with open(path, "w") as f:
            for cc in codes:
                for i in range(per_country):
                    f.write(json.dumps({"id": f"{cc}{i}", "url": f"https://news.{cc}/{i}",
                                        "country": cc, "continent": region,
                                        "title": f"Headline {i} of {cc}", "text": "Body."}) + "\n")
        raw["holdout"].append({"path": os.path.basename(path), "split": "test", "region": region,
                               "documents": per_country * len(codes)})
    with open(manifest, "w") as f:
        json.dump(raw, f)


def test_study_plan_reports_every_problem_at_once_and_runs_nothing(tmp_path):
    manifest = write_corpus(str(tmp_path / "corpus"), docs_per_region=4)
    spec = tmp_path / "study.yaml"
    spec.write_text(f"""
name: bad
output_dir: out
regions: [Africa, Asia, Europe]
data: {{manifest: {manifest}}}
defaults:
  train: {{model: tiny, train-iters: 4, tensor-model-parallel-size: 3}}
runs:
  - {{name: "global-{{variant}}", variant: [full, none]}}
stages:
  perplexity: {{max-documents: 10, max-docs-per-region: 5}}
  convert: {{}}
  mcq: {{benchmark: missing/qa_metacul.jsonl}}
""")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "megatron_meta.cli", "study", "plan", str(spec)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - t0
    assert out.returncode == 2, out.stdout + out.stderr
    err = out.stderr
    assert "Traceback" not in err and str(spec) in err and "3 problem(s), nothing was run" in err
    assert f"--benchmark {tmp_path / 'missing' / 'qa_metacul.jsonl'}: not found" in err
    assert "stages.perplexity" in err and "unknown flag --max-docs-per-region" in err
    assert "defaults.train / runs[0].train" in err
    assert "--tensor-model-parallel-size 3 does not divide num_attention_heads=4" in err
    assert err.count("--max-docs-per-region") == 1  # one line for both runs
    assert not (tmp_path / "out").exists()
    assert seconds < 60, seconds


def test_a_variant_preprocessing_will_not_write_and_a_bad_value_are_found(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("""
output_dir: out
data:
  tokenizer: {input: news-articles, vocab-size: 4096}
  preprocess: {input: news-articles, metadata-variants: "full,none", split-by: planet}
defaults: {train: {model: tiny, micro-batch-size: 3, global-batch-size: 8}}
runs: [{name: a, variant: url_only}]
stages: {mcq: {scoring: guess}}
""")
    study = load_study(str(spec))
    with pytest.raises(ConfigError) as e:
        check_study(study, build_graph(study), world_size=2)
    text = str(e.value)
    assert "data.preprocess (preprocess): argument --split-by: invalid choice: 'planet'" in text
    assert "--global-batch-size 8 is not a multiple of --micro-batch-size 3" in text
    assert "stages.mcq (mcq/a): argument --scoring: invalid choice: 'guess'" in text
    assert "no benchmark: give stages.mcq.benchmark" in text
    spec.write_text(spec.read_text().replace("micro-batch-size: 3", "micro-batch-size: 2")
                    .replace("split-by: planet", "split-by: continent")
                    .replace("{mcq: {scoring: guess}}", "{}"))
    study = load_study(str(spec))
    with pytest.raises(ConfigError, match="--variant url_only: preprocessing writes full, none"):
        check_study(study, build_graph(study), world_size=2)


def test_parse_problems_uses_each_commands_own_parser():
    assert parse_problems(["train", "--train-iters", "5", "--model", "tiny"]) == []
    assert parse_problems(["finetune", "merge", "--adapter", "a", "--output", "b"]) == []
    assert "unknown flag --lora-rank" in parse_problems(
        ["finetune", "--model", "m", "--data", "d", "--output", "o", "--lora-rank", "4"])[0]
    assert "required: --output" in parse_problems(["convert", "to-hf", "--load", "x"])[0]


def test_paths_in_a_study_file_are_relative_to_it(tmp_path, monkeypatch):
    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / "recipe.yaml").write_text("model: {preset: tiny}\n")
    (folder / "s.yaml").write_text("""
output_dir: out
data: {manifest: ../data/m.manifest.json}
defaults: {train: {config: recipe.yaml}}
runs: [{name: a}]
stages: {mcq: {benchmark: qa.jsonl}, finetune: {data: ~/sft.json}}
""")
    monkeypatch.chdir(tmp_path)
    study = load_study("studies/s.yaml")
    assert study.output_dir == str(folder / "out")
    assert study.data["manifest"] == str(tmp_path / "data" / "m.manifest.json")
    assert study.runs[0].train["config"] == str(folder / "recipe.yaml")
    assert study.stages["mcq"]["benchmark"] == str(folder / "qa.jsonl")
    assert study.stages["finetune"]["data"] == os.path.expanduser("~/sft.json")
    assert load_study("studies/s.yaml", output_dir="elsewhere").output_dir == str(tmp_path / "elsewhere")


def test_the_mcq_benchmark_is_the_built_set_unless_a_file_is_given(tmp_path, monkeypatch):
    from megatron_meta.study.kinds import BENCHMARK_ENV, mcq_benchmark

    spec = tmp_path / "s.yaml"
    spec.write_text("data: {manifest: m.json, benchmark: {seed: 1}}\nruns: [{name: a}]\n"
                    "stages: {convert: {}, mcq: {}}\n")
    monkeypatch.delenv(BENCHMARK_ENV, raising=False)
    study = load_study(str(spec))
    nodes = {n.name: n for n in build_graph(study)}
    built = str(tmp_path / "runs" / "study" / "data" / "mcq_news.jsonl")
    assert nodes["benchmark"].args[:2] == ["evaluate", "make-mcq"] and nodes["benchmark"].output == built
    assert "benchmark" in nodes["mcq/a"].deps and built in nodes["mcq/a"].args
    monkeypatch.setenv(BENCHMARK_ENV, "qa.jsonl")
    assert mcq_benchmark(study) == (os.path.abspath("qa.jsonl"), f"${BENCHMARK_ENV}")
    spec.write_text(spec.read_text().replace("mcq: {}", "mcq: {benchmark: paper.jsonl}"))
    assert mcq_benchmark(load_study(str(spec))) == (str(tmp_path / "paper.jsonl"), "stages.mcq.benchmark")


def test_a_capped_mcq_set_spreads_its_answers_over_the_countries():
    import collections
    import random

    from megatron_meta.evaluation.mcq.news import balanced_sample

    countries = ["us"] * 60 + ["qa"] * 20 + ["cn"] * 15 + ["ie"] * 5  # a news corpus's skew
    chosen = balanced_sample(countries, 30, random.Random(0))
    assert chosen == sorted(set(chosen)) and len(chosen) == 30
    counts = collections.Counter(countries[i] for i in chosen)
    assert counts["ie"] == 5  # all it has
    assert sorted(counts[c] for c in ("us", "qa", "cn")) == [8, 8, 9]  # the rest in turn
    assert balanced_sample(countries, 30, random.Random(0)) == chosen  # seeded


def test_make_mcq_builds_a_seeded_four_option_set_in_the_benchmark_format(tmp_path):
    from megatron_meta.evaluation.mcq.data import read_benchmark

    manifest = write_corpus(str(tmp_path / "corpus"), docs_per_region=4)
    add_holdout(manifest)
    out = tmp_path / "mcq.jsonl"
    cmd = [sys.executable, "-m", "megatron_meta.cli", "evaluate", "make-mcq", "--data-manifest",
           manifest, "--output", str(out), "--seed", "3"]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "wrote 18 questions" in run.stdout
    first = out.read_text()
    records = [json.loads(line) for line in first.splitlines()]
    assert {"question", "options", "correct_answer", "distractors", "country", "continent",
            "generated_by"} <= set(records[0])
    questions = read_benchmark(str(out))  # the benchmark's own reader accepts it
    assert len(questions) == 18
    by_title = {r["question"]: q for r, q in zip(records, questions)}
    q = by_title['In which country is the news outlet that published the headline "Headline 0 of ke" based?']
    assert q.country == "ke" and q.continent == "Africa" and len(set(q.options)) == 4
    assert q.options[q.answer] == "Kenya"
    assert len({q.answer for q in questions}) > 1  # the right answer is not always first
    subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    assert out.read_text() == first  # seeded
    shutil.rmtree(tmp_path / "corpus")
    bad = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "manifest not found" in bad.stderr and "Traceback" not in bad.stderr
