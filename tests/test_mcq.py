"""The localized MCQ benchmark: reading, log-likelihood scoring, generation parsing, the CLI."""

import json
import math
import os

import numpy as np
import pytest
import torch

from hf_fixtures import make_tiny_llama, make_unigram_llama
from megatron_meta.errors import DataError
from megatron_meta.evaluation.mcq.answer_parser import parse_answer
from megatron_meta.evaluation.mcq.data import (
    generation_prompt, loglik_context, read_benchmark,
)

QUESTIONS = [
    {"question": "What is the capital city of Nigeria?", "options": ["Lagos", "Abuja", "Kano", "Ibadan"],
     "correct_answer": "Abuja", "country": "Nigeria", "continent": "africa"},
    {"question": "Which city hosts the White House?", "options": ["Washington", "Boston", "Denver", "Miami"],
     "correct_answer": "Washington", "country": "USA", "continent": "america"},
    {"question": "What is the currency of Ghana?", "options": ["Naira", "Rand", "Cedi", "Shilling"],
     "correct_answer": "Cedi", "country": "Ghana", "continent": "africa"},
    {"question": "Which river flows through Dublin?", "options": ["Shannon", "Liffey", "Boyne", "Lee"],
     "correct_answer": "Liffey", "country": "Ireland", "continent": "europe"},
]


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return str(path)


@pytest.fixture
def bench(tmp_path):
    return write_jsonl(tmp_path / "bench.jsonl", QUESTIONS)


def test_read_benchmark_normalizes_countries(bench):
    qs = read_benchmark(bench)
    assert [(q.country, q.continent, q.answer) for q in qs] == [
        ("ng", "Africa", 1), ("us", "America", 0), ("gh", "Africa", 2), ("ie", "Europe", 1)]
    assert loglik_context(qs[0], None) == (
        "CONTENT:\nQuestion: What is the capital city of Nigeria?\n\nOptions:\nA: Lagos\nB: Abuja\n"
        "C: Kano\nD: Ibadan\nAnswer:")
    assert generation_prompt(qs[1], "www.factquizmaster.com") == (
        "URL: www.factquizmaster.com/us\nCOUNTRY: us\nCONTINENT: America\n\nTITLE: Facts about the "
        "country us\n\nCONTENT:\nQuestion: Which city hosts the White House?\n\nOptions:\n"
        "A: Washington\nB: Boston\nC: Denver\nD: Miami\n\nAnswer with the correct option.")


def test_bad_benchmark_lines_are_all_named(tmp_path):
    rows = [QUESTIONS[0], {**QUESTIONS[1], "options": []},
            {**QUESTIONS[2], "correct_answer": "Euro"}, "{oops", {**QUESTIONS[3], "country": "Atlantis"}]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as e:
        read_benchmark(path)
    msg = str(e.value)
    assert msg.startswith("4 bad benchmark line(s)")
    assert f"{path}:2: 'options' must be a list of 4" in msg
    assert f"{path}:3: correct_answer 'Euro' is not among the options" in msg
    assert f"{path}:4: invalid JSON" in msg and f"{path}:5: unknown country 'Atlantis'" in msg


@pytest.mark.parametrize("text, want", [
    ("B", 1), ("(C) Cedi", 2), ("D: Ibadan", 3), ("A.", 0),
    ("The correct answer is B.", 1), ("Answer: c", 2), ("I think option D is right", 3),
    ("The capital of Nigeria is Abuja.", 1), ("It is Kano, in the north.", 2),
    ("Abuja or Lagos, hard to say", None), ("I don't know.", None), ("", None),
    ("Between the options, C. seems right", 2),
])
def test_answer_parser(text, want):
    assert parse_answer(text, ["Lagos", "Abuja", "Kano", "Ibadan"]) == want


def test_parser_does_not_count_an_option_inside_another():
    assert parse_answer("Lagos State is the answer", ["Lagos", "Lagos State", "Kano", "Oyo"]) == 1


@pytest.fixture(scope="module")
def unigram(tmp_path_factory, smollm2_hf):
    """A model whose next-token log-probabilities are known; the correct options are made likely."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_hf)
    logits = np.zeros(49152, dtype=np.float32)
    favoured = {}
    for q in QUESTIONS:
        for t in tok.encode(" " + q["correct_answer"]):
            logits[t] = 8.0
            favoured[t] = True
    folder = make_unigram_llama(tmp_path_factory.mktemp("unigram"), smollm2_hf, logits)
    logp = torch.log_softmax(torch.tensor(logits, dtype=torch.float64), 0).numpy()
    return folder, tok, logp


def test_loglik_scores_are_the_known_values_and_pick_the_answer(unigram, bench):
    from transformers import AutoModelForCausalLM

    from megatron_meta.evaluation.mcq.loglik import choose, score_options, score_options_full

    folder, tok, logp = unigram
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    for q in read_benchmark(bench):
        for base in (None, "www.quizatlas.org"):
            ctx = loglik_context(q, base)
            scores = score_options(model, tok, ctx, q.options)
            for (got, n), option in zip(scores, q.options):
                ids = tok.encode(ctx + " " + option)[len(tok.encode(ctx)):]
                assert n == len(ids) and got == pytest.approx(sum(logp[i] for i in ids), abs=1e-3)
            assert choose(scores, q.options)[0] == q.answer
            full = score_options_full(model, tok, ctx, q.options)
            assert np.allclose([s for s, _ in scores], [s for s, _ in full], atol=1e-4)


def test_shared_context_cache_equals_full_sequences_on_the_real_model(smollm2_hf, bench):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from megatron_meta.evaluation.mcq.loglik import score_options, score_options_full

    model = AutoModelForCausalLM.from_pretrained(smollm2_hf).eval()
    tok = AutoTokenizer.from_pretrained(smollm2_hf)
    q = read_benchmark(bench)[3]
    ctx = loglik_context(q, "www.quizatlas.org")
    fast, slow = score_options(model, tok, ctx, q.options), score_options_full(model, tok, ctx, q.options)
    assert [n for _, n in fast] == [n for _, n in slow]
    assert np.allclose([s for s, _ in fast], [s for s, _ in slow], atol=1e-4)


def test_evaluate_mcq_cli_loglik_records_and_report(unigram, bench, tmp_path):
    from megatron_meta.cli import main

    out = tmp_path / "res" / "mcq.json"
    assert main(["evaluate", "mcq", "--model", unigram[0], "--label", "uni", "--benchmark", bench,
                 "--output", str(out)]) == 0
    raw = json.loads(out.read_text())
    records = raw["records"]
    assert len(records) == 8 and {r["setting"] for r in records} == {"with", "without"}
    assert all(r["correct"] and r["chosen"] == r["answer"] for r in records)
    assert {r["country"] for r in records} == {"ng", "us", "gh", "ie"}
    table = (tmp_path / "res" / "mcq.md").read_text()
    assert "| accuracy % [95% CI]   | 100.0 [100.0, 100.0]" in table
    assert "| Africa" in table and "| us" in table
    assert (tmp_path / "res" / "mcq.png").stat().st_size > 1000
    assert not list((tmp_path / "res").glob("*.tmp*"))


def test_evaluate_mcq_generation_protocol_records(tmp_path, smollm2_hf, bench):
    from megatron_meta.evaluation.mcq.score import McqConfig, score_model
    from megatron_meta.evaluation.mcq.report import summarize

    tiny = make_tiny_llama(tmp_path / "tiny", smollm2_hf)
    config = McqConfig(models=[tiny], benchmark=bench, scoring="generate", repeats=2,
                       max_new_tokens=6, batch_size=3)
    qs = read_benchmark(bench)
    records = score_model(tiny, qs, config, "tiny")
    assert len(records) == 2 * 2 * 4
    assert {(r["setting"], r["repeat"], r["base_url"]) for r in records} == {
        ("with", 0, "www.factquizmaster.com"), ("with", 1, "www.globalfactcheck.org"),
        ("without", 0, None), ("without", 1, None)}
    for r in records:
        assert r["parsed"] == (r["chosen"] is not None)
        assert r["chosen"] == parse_answer(r["response"], qs[r["question"]].options)
    again = score_model(tiny, qs, config, "tiny")
    assert [r["response"] for r in again] == [r["response"] for r in records]  # seeded
    stats = summarize(records)
    assert stats[("tiny", "generate", "with")]["answers"] == 8
    unparsed = sum(not r["parsed"] for r in records if r["setting"] == "with")
    assert stats[("tiny", "generate", "with")]["unparseable"] == unparsed


def test_cli_bad_inputs_are_one_line_errors(tmp_path, capsys, smollm2_hf, bench):
    from megatron_meta.cli import main

    bad = write_jsonl(tmp_path / "bad.jsonl", [{**QUESTIONS[0], "correct_answer": "Paris"}])
    out = tmp_path / "r.json"
    assert main(["evaluate", "mcq", "--model", smollm2_hf, "--benchmark", bad, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{bad}:1: correct_answer 'Paris'" in err
    assert not out.exists()
    notlm = tmp_path / "notlm"
    notlm.mkdir()
    (notlm / "config.json").write_text(json.dumps({"model_type": "vit", "hidden_size": 8}))
    assert main(["evaluate", "mcq", "--model", str(notlm), "--benchmark", bench, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a causal language model" in err, err
    assert not out.exists()


@pytest.mark.slow
def test_megatron_checkpoint_model_is_converted(tmp_path):
    from transformers import AutoModelForCausalLM

    from megatron_meta.finetune.hf_load import resolve_hf_folder
    from training_support import run_cli, tiny_args, write_corpus

    save = str(tmp_path / "ckpt")
    manifest = write_corpus(str(tmp_path / "data"), docs_per_region=8)
    run = run_cli(tiny_args(manifest, **{"--train-iters": 2, "--save": save}))
    assert run.returncode == 0, run.stderr[-2000:]
    folder = resolve_hf_folder(save)
    assert folder != save and os.path.exists(os.path.join(folder, "config.json"))
    assert resolve_hf_folder(save) == folder  # converted once, then reused
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


def test_generate_writes_the_training_format():
    from megatron_meta.evaluation.generate import build_text
    from megatron_meta.errors import ConfigError

    assert build_text("The minister said", "https://www.vanguardngr.com/x", "Nigeria") == (
        "URL: https://www.vanguardngr.com/x\nCOUNTRY: ng\nCONTINENT: Africa\n\nCONTENT: The minister said")
    assert build_text("Hi", country="USA", title="Budget") == (
        "COUNTRY: us\nCONTINENT: America\n\nTITLE: Budget\n\nCONTENT: Hi")
    assert build_text("Hi") == "CONTENT: Hi" and build_text("Hi", raw=True) == "Hi"
    with pytest.raises(ConfigError, match="--country 'Atlantis'"):
        build_text("Hi", country="Atlantis")


def test_generate_cli_samples_from_the_model(tmp_path, smollm2_hf, capsys):
    from megatron_meta.cli import main

    tiny = make_tiny_llama(tmp_path / "tiny", smollm2_hf)
    assert main(["generate", "--model", tiny, "--prompt", "Hello", "--country", "gh",
                 "--max-new-tokens", "5", "--greedy"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("COUNTRY: gh\nCONTINENT: Africa\n\nCONTENT: Hello") and len(out) > 40


def test_question_sample_is_seeded_and_in_file_order(bench):
    from megatron_meta.evaluation.mcq.cli import select_questions

    qs = read_benchmark(bench)
    picked = select_questions(qs, sample=2, seed=3)
    assert picked == select_questions(qs, sample=2, seed=3) and len(picked) == 2
    assert [q.index for q in picked] == sorted(q.index for q in picked)
    assert select_questions(qs, limit=3) == qs[:3] and select_questions(qs, sample=10) == qs


def test_shuffled_options_keep_the_answer_and_the_scorer_follows_it(unigram, bench):
    import random

    from megatron_meta.evaluation.mcq.score import McqConfig, score_model

    qs = read_benchmark(bench)
    for q in qs:
        s = q.shuffled(random.Random(1))
        assert sorted(s.options) == sorted(q.options) and s.options[s.answer] == q.options[q.answer]
    config = McqConfig(models=[unigram[0]], benchmark=bench, repeats=3, shuffle_options=True)
    records = score_model(unigram[0], qs, config, "uni")
    assert all(r["correct"] for r in records)  # the unigram model prefers the answer's text
    assert len({r["answer"] for r in records}) > 1  # ... wherever it is shown
    assert all(r["options"][r["answer"]] == qs[r["question"]].options[qs[r["question"]].answer]
               for r in records)
    by_setting = {(r["repeat"], r["question"]): r["options"] for r in records if r["setting"] == "with"}
    assert all(by_setting[(r["repeat"], r["question"])] == r["options"]
               for r in records if r["setting"] == "without")  # paired: the same order
