"""Counterfactual metadata and the short/long-context study, on crafted documents and real SmolLM2."""

import json
import os

import numpy as np
import pytest

from megatron_meta.corpora.records import Document

OUTLETS = {"Africa": ("ng", "vanguardngr"), "Europe": ("ie", "irishtimes"), "Asia": ("in", "thehindu")}
STORIES = ["the harbour bridge reopened after repairs", "the national football team won its match",
           "farmers expect a record harvest this year"]


def crafted_sets():
    """Per region 3 documents whose text cites their own URL: a model that reads its metadata can
    copy the URL from the metadata block, so its own metadata must beat another region's."""
    sets = {}
    for region, (cc, outlet) in OUTLETS.items():
        docs = []
        for i, story in enumerate(STORIES):
            url = f"https://www.{outlet}.com/news/2017/story-{i}"
            docs.append(Document(id=f"{cc}{i}", url=url, country=cc, continent=region,
                                 title=story.capitalize(),
                                 text=f"Officials said {story}. Read the full story at {url} and "
                                      f"more news at https://www.{outlet}.com/news today."))
        sets[region] = docs
    return sets


@pytest.fixture(scope="module")
def hf(smollm2_hf):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from megatron_meta.evaluation.perplexity.hf_scoring import hf_codec, hf_score_fn

    model = AutoModelForCausalLM.from_pretrained(smollm2_hf).eval()
    tok = AutoTokenizer.from_pretrained(smollm2_hf)
    return hf_score_fn(model, 4), hf_codec(tok), tok


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    from megatron_meta.manifest import HoldoutEntry, Manifest, TokenizerInfo, write_manifest

    folder = tmp_path_factory.mktemp("heldout")
    entries = []
    for region, docs in crafted_sets().items():
        path = folder / f"test_{region}.jsonl"
        path.write_text("".join(json.dumps(d.to_json()) + "\n" for d in docs))
        entries.append(HoldoutEntry(path=str(path), split="test", region=region, documents=len(docs)))
    m = Manifest(tokenizer=TokenizerInfo(type="NullTokenizer", model="", vocab_size=49152, eod_id=0),
                 shards=[], holdout=entries, skipped={}, command=["tests"], split_by="continent")
    path = str(folder / "m.manifest.json")
    write_manifest(m, path)
    return path


def test_conditions_score_the_same_body_with_the_right_metadata(hf):
    from megatron_meta.evaluation.perplexity.counterfactual import encode_conditions

    _, codec, tok = hf
    sets = crafted_sets()
    doc, donor = sets["Africa"][0], sets["Asia"][2]
    enc = encode_conditions(doc, {"own": doc, "none": None, "Asia": donor}, "full", "full", codec, 1024)
    bodies = {n: e.sequence[e.start:] for n, e in enc.items()}
    assert bodies["own"] == bodies["none"] == bodies["Asia"]
    text = {n: tok.decode(e.sequence[1:e.start]) for n, e in enc.items()}
    assert text["own"] == f"URL: {doc.url}\nCOUNTRY: ng\nCONTINENT: Africa\n\n"
    assert text["Asia"] == f"URL: {donor.url}\nCOUNTRY: in\nCONTINENT: Asia\n\n"
    assert text["none"] == ""
    short = encode_conditions(doc, {"own": doc, "none": None}, "full", "full", codec, 40)
    assert len(short["own"].sequence) <= 41 and short["own"].sequence[short["own"].start:] == \
        short["none"].sequence[short["none"].start:]


def test_right_metadata_beats_the_wrong_one(hf):
    from megatron_meta.evaluation.perplexity.counterfactual import counterfactual, format_counterfactual
    from megatron_meta.evaluation.perplexity.evaluate import PerplexityConfig, evaluate_documents

    score, codec, _ = hf
    sets = crafted_sets()
    results = counterfactual(score, codec, sets, "smollm2", bootstrap_samples=200)
    assert [r.region for r in results] == list(sets)
    for r in results:
        assert set(r.ppl) == {"own", "none"} | (set(sets) - {r.region})
        assert r.ppl["own"] < r.ppl_wrong and r.ratio_own_wrong[2] < 1.0, r  # the URL is copied
        assert r.ratio_own_wrong[1] <= r.ratio_own_wrong[0] <= r.ratio_own_wrong[2]
    # The own condition is exactly the standard perplexity of the 'full' test variant.
    standard = evaluate_documents(score, codec, sets, PerplexityConfig("-", "-", ["full", "none"],
                                                                       bootstrap_samples=200), "smollm2")
    for r in results:
        full = next(s for s in standard if s.region == r.region and s.variant == "full")
        none = next(s for s in standard if s.region == r.region and s.variant == "none")
        assert r.ppl["own"] == pytest.approx(full.ppl, rel=1e-6)
        assert r.ppl["none"] == pytest.approx(none.ppl, rel=1e-6)
        assert r.tokens == full.tokens
    table = format_counterfactual(results)
    assert "own / wrong" in table and "| smollm2 | Africa" in table


def test_context_length_scores_the_first_n_tokens(hf):
    from megatron_meta.evaluation.perplexity.context_length import context_length_study
    from megatron_meta.evaluation.perplexity.evaluate import encode_variants

    score, codec, _ = hf
    sets = crafted_sets()
    results = context_length_study(score, codec, sets, "smollm2", [4, 16, 64], bootstrap_samples=200)
    assert [(r.region, r.first_tokens) for r in results[:3]] == [("Africa", 4), ("Africa", 16),
                                                                 ("Africa", 64)]
    body = [len(e["none"].sequence) - e["none"].start for e in
            (encode_variants(d, ["full", "none"], "full", codec, 1 << 30) for d in sets["Africa"])]
    for r in results[:3]:
        assert r.tokens == sum(min(r.first_tokens, b) for b in body) and r.documents == 3
        assert np.isfinite([r.ppl_with, r.ppl_without]).all()
    pooled = [r for r in results if r.region == "all"]
    assert [r.documents for r in pooled] == [9, 9, 9]


@pytest.mark.slow
def test_study_commands_write_results(tmp_path, smollm2_hf, manifest):
    from megatron_meta.cli import main

    out = tmp_path / "cf.json"
    assert main(["evaluate", "counterfactual", "--model", smollm2_hf, "--data-manifest", manifest,
                 "--bootstrap-samples", "100", "--output", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert len(rows) == 3 and all(r["ratio_own_wrong"][0] < 1 for r in rows)
    assert os.path.getsize(tmp_path / "cf.png") > 1000 and (tmp_path / "cf.md").exists()
    out = tmp_path / "ctx.json"
    assert main(["evaluate", "context-length", "--model", smollm2_hf, "--data-manifest", manifest,
                 "--lengths", "8,32", "--bootstrap-samples", "100", "--output", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["first_tokens"] for r in rows if r["region"] == "all"] == [8, 32]
    assert os.path.getsize(tmp_path / "ctx.png") > 1000
    assert not list(tmp_path.glob("*.tmp*"))


def _result(model, variant, region, nll, tokens, train="full"):
    from megatron_meta.evaluation.perplexity.evaluate import RegionResult, corpus_perplexity

    return RegionResult(model=model, variant=variant, region=region, documents=len(nll),
                        tokens=sum(tokens), nll=sum(nll), ppl=corpus_perplexity(nll, tokens),
                        ci_low=0.0, ci_high=0.0, train_variant=train, document_ids=["a", "b"],
                        document_nll=list(nll), document_tokens=list(tokens))


def test_region_matrix_and_the_papers_comparisons(tmp_path):
    from megatron_meta.cli import main
    from megatron_meta.evaluation.perplexity.matrix import format_matrix, model_role
    from megatron_meta.evaluation.perplexity.evaluate import PerplexityConfig, write_results

    assert model_role("local-africa-none") == ("local", "africa")
    assert model_role("Global") == ("global", None) and model_role("loo_asia") == ("loo", "asia")
    assert model_role("smollm2") == (None, None)
    nll = {"global": 2.0, "local-africa": 1.0, "loo-africa": 3.0}  # nats per token on Africa
    paths = []
    for model, per_token in nll.items():
        results = [_result(model, v, g, [per_token * 10 + (g == "Europe"), per_token * 20],
                           [10, 20]) for v in ("full", "none") for g in ("Africa", "Europe")]
        path = tmp_path / f"{model}.json"
        write_results(str(path), results, PerplexityConfig("-", "-", ["full", "none"]))
        paths.append(str(path))
    from megatron_meta.evaluation.perplexity.evaluate import read_results

    text = format_matrix([r for p in paths for r in read_results(p)])
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
             if line.startswith("|")]
    assert ["local-africa (full)", f"{np.exp(1.0):.2f}", f"{np.exp(31 / 30):.2f}"] in cells
    assert ["local-africa / global (local / global, test full)", "Africa",
            f"{np.exp(-1.0):.3f} [{np.exp(-1.0):.3f}, {np.exp(-1.0):.3f}]"] in cells
    assert ["loo-africa / global (left-out region: leave-one-out / global, test full)", "Africa",
            f"{np.exp(1.0):.3f} [{np.exp(1.0):.3f}, {np.exp(1.0):.3f}]"] in cells
    assert main(["evaluate", "report", *paths, "--output-prefix", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep.matrix.png").stat().st_size > 1000
    assert "Comparisons" in (tmp_path / "rep.matrix.md").read_text()
