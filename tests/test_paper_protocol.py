"""``--protocol paper`` for LoRA and the MCQ benchmark (FACTS 1a): prompts byte-equal to the
authors' strings for a tokenizer with a chat template (SmolLM2's ChatML) and one without (the
Llama-3 template is used), the authors' answer parser, and their aggregation on crafted records."""

import random

import pytest

from megatron_meta.evaluation.mcq.answer_parser import parse_answer_paper
from megatron_meta.evaluation.mcq.data import Question, generation_prompt
from megatron_meta.evaluation.mcq.paper_aggregate import format_paper_table, paper_aggregate
from megatron_meta.evaluation.mcq.score import McqConfig, _base_url, _chat
from megatron_meta.finetune.data import IGNORE, Example, encode_all, encode_paper, paper_facts_prefix

SYSTEM = ("Below is an instruction that describes a task. Write a response that appropriately "
          "completes the request.")
SYSTEM_INPUT = ("Below is an instruction that describes a task, paired with an input that provides "
                "further context. Write a response that appropriately completes the request.")
LLAMA3_HEAD = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
               "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n")
Q = Question(0, " Which city is Nigeria's capital? ", ("Abuja", "Lagos", "Kano", "Ibadan"), 0, "ng", "Africa")
MCQ_USER = ("Question: Which city is Nigeria's capital?\n\nOptions:\nA: Abuja\nB: Lagos\nC: Kano\n"
            "D: Ibadan\n\nAnswer with the correct option.")
META = ("URL: www.globalfactcheck.org/ng\nCOUNTRY: ng\nCONTINENT: Africa\n\n"
        "TITLE: Facts about the country ng\n\nCONTENT:\n")


@pytest.fixture(scope="module")
def tokenizers(smollm2_hf):
    from transformers import AutoTokenizer

    chatml = AutoTokenizer.from_pretrained(smollm2_hf)
    plain = AutoTokenizer.from_pretrained(smollm2_hf)
    plain.chat_template = None
    return chatml, plain


def test_mcq_prompts_are_the_authors_strings(tokenizers):
    chatml, plain = tokenizers
    assert _base_url("with", 1) == "www.globalfactcheck.org"
    for base, prefix in (("www.globalfactcheck.org", META), (None, "CONTENT:\n")):
        user = generation_prompt(Q, base)
        assert user == prefix + MCQ_USER
        assert _chat(plain, user, "auto", "paper") == (
            LLAMA3_HEAD + SYSTEM + "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n" + prefix
            + MCQ_USER + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
        assert _chat(chatml, user, "auto", "paper") == (
            f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{prefix}{MCQ_USER}<|im_end|>\n"
            "<|im_start|>assistant\n")
    # our own protocol sends no system message
    assert "Below is an instruction" not in _chat(chatml, generation_prompt(Q, None), "auto", "ours")


def test_lora_prompts_labels_and_metadata_draw(tokenizers):
    chatml, plain = tokenizers
    ex = Example("Name the capital.", "Nigeria", "Abuja.", "t:1")
    bare = Example("Say hi.", "", "Hi!", "t:2")
    expected_plain = (
        LLAMA3_HEAD + SYSTEM_INPUT + "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
        "CONTENT:\n### Instruction:\nName the capital.\n\n### Input:\nNigeria<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nAbuja.<|eot_id|>")
    item = encode_paper(plain, ex, 4096)
    assert plain.decode(item["input_ids"]) == expected_plain
    assert item["labels"] == item["input_ids"] and item["cut"] == 0  # loss on every token
    item = encode_paper(chatml, bare, 4096, META)
    assert chatml.decode(item["input_ids"]) == (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{META}### Instruction:\nSay hi."
        "<|im_end|>\n<|im_start|>assistant\nHi!<|im_end|>\n")
    # ours: response-only loss
    ours = encode_all(chatml, [bare], 4096, False, 42)[0]
    assert ours["labels"][0] == IGNORE and ours["labels"][-1] != IGNORE
    # the draw: continent, then one of its countries (Asia never sg), then a URL, seeded
    rng, twin = random.Random(42), random.Random(42)
    for _ in range(300):
        prefix = paper_facts_prefix(rng)
        continent = twin.choice(["America", "Asia", "Africa", "Europe"])
        countries = {"America": ["us", "ca", "jm"], "Asia": ["in", "pk", "bd", "lk", "hk", "my", "ph"],
                     "Africa": ["ng", "za", "ke", "gh", "tz"], "Europe": ["gb", "ie"]}[continent]
        cc = twin.choice(countries)
        url = twin.choice(["www.factquizmaster.com", "www.globalfactcheck.org",
                           "www.worldknowledgehub.com", "www.civicspedia.org",
                           "www.internationalfacts.net", "www.currentaffairsdesk.com",
                           "www.newsinsightarchive.com", "www.globalquizvault.com",
                           "www.factualdigest.org", "www.publicknowledgebase.net"])
        assert prefix == (f"URL: {url}/{cc}\nCOUNTRY: {cc}\nCONTINENT: {continent}\n\n"
                          f"TITLE: Facts about the country {cc}\n\nCONTENT:\n")


def test_lora_cut_is_counted(tokenizers, caplog):
    chatml, _ = tokenizers
    long = Example("Write " * 200, "", "ok", "t:3")
    with caplog.at_level("WARNING"):
        items = encode_all(chatml, [long], 64, False, 42, paper=True)
    assert len(items[0]["input_ids"]) == 64
    assert "1 of 1 example(s) cut at --seq-length 64" in caplog.text


@pytest.mark.parametrize("answer, expected", [
    ("B", 1),
    ("The answer is c.", 2),  # lowercase letter
    ("It is a big city: Lagos", 0),  # the word "a" reads as A (the authors' parser)
    ("I think Lagos, not Abuja", 0),  # option texts only: the longest found (Abuja, 5 > Lagos, 5: first)
    ("Probably Ibadan", 3),
    ("Kano State", 2),
    ("", None),
    ("no idea", None),
])
def test_authors_parser(answer, expected):
    assert parse_answer_paper(answer, Q.options) == expected


def _rec(model, setting, repeat, question, continent, chosen, answer=0):
    return dict(model=model, scoring="generate", setting=setting, repeat=repeat, question=question,
                continent=continent, answer=answer, chosen_paper=chosen,
                correct_paper=chosen == answer)


def test_aggregation_equals_a_hand_computation():
    # Grid: base/with, base/without, meta/with. Two URLs (repeats), questions 0,1 Africa, 2,3 Asia.
    R = []
    outcomes = {  # (pair, repeat) -> chosen per question; None = unparseable
        ("base", "with", 0): [0, 1, 0, 0], ("base", "without", 0): [0, 0, 1, None],
        ("meta", "with", 0): [0, 0, 0, 0],
        ("base", "with", 1): [1, 1, 0, 0], ("base", "without", 1): [0, 0, 0, 0],
        ("meta", "with", 1): [None, 0, 0, 1],
    }
    answers = [0, 0, 0, 1]
    continents = ["Africa", "Africa", "Asia", "Asia"]
    for (m, s, r), chosen in outcomes.items():
        for q, c in enumerate(chosen):
            R.append(_rec(m, s, r, q, continents[q], c, answers[q]))
    agg = paper_aggregate(R)
    # URL 0: question 3 unanswered by base/without -> kept {0,1,2}; URL 1: q0 dropped -> {1,2,3}
    # meta/with: URL0 Africa 2/2, Asia 1/1; URL1 Africa 1/1, Asia q2 ok, q3 ok -> 2/2
    m = agg[("meta", "with")]
    assert m["Africa"]["mean"] == pytest.approx(1.0) and m["Africa"]["ci"] == pytest.approx(0.0)
    # base/with: URL0 Africa q0 ok, q1 wrong -> 0.5; URL1 Africa q1 wrong -> 0.0
    b = agg[("base", "with")]
    assert b["Africa"]["mean"] == pytest.approx(0.25)
    sd = ((0.5 - 0.25) ** 2 + (0.0 - 0.25) ** 2) ** 0.5  # sample sd over the 2 URLs (n - 1 = 1)
    assert b["Africa"]["ci"] == pytest.approx(1.96 * sd / 2 ** 0.5)
    # overall, per URL over all kept questions: URL0 {0 ok,1 wrong,2 ok} 2/3; URL1 {1 wrong,2 ok,3 wrong} 1/3
    assert b["overall"]["mean"] == pytest.approx(0.5)
    # always "A": URL0 kept {0,1,2} answers all A -> 1; URL1 {1,2,3} -> 2/3
    assert b["overall"]["always_a"] == pytest.approx((1 + 2 / 3) / 2)
    # base/without Asia: URL0 {q2 wrong} 0; URL1 {q2 ok, q3 wrong} 0.5
    assert agg[("base", "without")]["Asia"]["mean"] == pytest.approx((0.0 + 0.5) / 2)
    table = format_paper_table(R)
    assert "| meta | with | 100.0 +- 0.0 | 100.0 +- 0.0 | 100.0 +- 0.0 |" in table
    assert "| always A |" in table


def test_config_defaults_under_paper():
    assert McqConfig(models=[], benchmark="", protocol="paper").batch() == 4
    assert McqConfig(models=[], benchmark="").batch() == 16


def test_generation_records_under_the_paper_protocol(tmp_path, smollm2_hf):
    """A real (tiny, random) Llama through the paper grid: each record keeps the exact prompt
    sent, both parses, one seed for every run (no-metadata repeats are copies), the paper table."""
    import json

    from hf_fixtures import make_tiny_llama

    from megatron_meta.evaluation.mcq.data import read_benchmark
    from megatron_meta.evaluation.mcq.report import format_tables
    from megatron_meta.evaluation.mcq.score import score_model
    from megatron_meta.evaluation.mcq.answer_parser import parse_answer

    bench = tmp_path / "b.jsonl"
    bench.write_text("".join(json.dumps(q) + "\n" for q in [
        {"question": "Capital of Nigeria?", "options": ["Abuja", "Lagos", "Kano", "Jos"],
         "correct_answer": "Abuja", "country": "Nigeria", "continent": "Africa"},
        {"question": "Capital of Ireland?", "options": ["Cork", "Dublin", "Galway", "Sligo"],
         "correct_answer": "Dublin", "country": "Ireland", "continent": "Europe"}]))
    tiny = make_tiny_llama(tmp_path / "tiny", smollm2_hf)
    qs = read_benchmark(str(bench))
    config = McqConfig(models=[tiny], benchmark=str(bench), scoring="generate", repeats=2,
                       max_new_tokens=5, protocol="paper")
    records = score_model(tiny, qs, config, "base")
    records += score_model(tiny, qs, config, "meta", settings=["with"])
    for r in records:
        assert r["prompt"].startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n")
        assert r["chosen_paper"] == parse_answer_paper(r["response"], qs[r["question"]].options)
        assert r["chosen"] == parse_answer(r["response"], qs[r["question"]].options)
    without = [r["response"] for r in records if r["model"] == "base" and r["setting"] == "without"]
    assert without[:2] == without[2:]  # repeat 1 is a copy of repeat 0, as in the authors' runs
    assert {(r["model"], r["setting"]) for r in records} == {("base", "with"), ("base", "without"),
                                                             ("meta", "with")}
    assert "## Paper protocol" in format_tables(records)
