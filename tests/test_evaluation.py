"""Per-region perplexity: document sample, loss start at ``TITLE:`` for every tokenizer library,
equal scored text across variants, bootstrap interval, scoring a real megatron-core model, and
the report's table and chart."""

import json
import math
import os
import struct

import numpy as np
import pytest

from megatron_meta.errors import DataError
from megatron_meta.evaluation import cli as eval_cli
from megatron_meta.evaluation.perplexity.evaluate import (
    Codec, PerplexityConfig, RegionResult, bootstrap_ci, corpus_perplexity, encode_variants,
    evaluate_documents, loss_start, paired_ratio_ci, read_results, sample_documents, write_results,
)
from megatron_meta.evaluation.perplexity.report import format_table
from megatron_meta.metadata.formatting import VARIANTS, format_document, metadata_prefix

from preprocess_fixtures import TOKENIZER_TYPES


def _codec(toks, name):
    from megatron_meta.tokenizer.load import load_tokenizer

    return Codec.of(load_tokenizer(TOKENIZER_TYPES[name], toks[name]))


# --------------------------------------------------------------------------- sample, loss start


def test_sample_is_seeded_ordered_and_bounded(docs):
    first = sample_documents(docs, 10, seed=42)
    assert [d.id for d in first] == [d.id for d in sample_documents(docs, 10, seed=42)]
    assert len(first) == 10 and len({d.id for d in first}) == 10
    positions = [docs.index(d) for d in first]
    assert positions == sorted(positions)  # file order kept
    assert [d.id for d in sample_documents(docs, 10, seed=7)] != [d.id for d in first]
    assert sample_documents(docs, 1000) == list(docs)


@pytest.mark.parametrize("name", list(TOKENIZER_TYPES))
def test_loss_start_is_the_token_holding_title_or_content(toks, docs, name):
    codec = _codec(toks, name)
    checked_untitled = False
    for doc in docs[:16]:
        for variant in VARIANTS:
            for form in ("full", "domain"):
                text = format_document(doc, variant, form)
                ids = codec.tokenize(text)
                boundary = len(metadata_prefix(doc, variant, form))
                k = loss_start(codec.detokenize, ids, boundary)
                before = codec.detokenize(ids[:k])
                upto = codec.detokenize(ids[: k + 1])
                # ids[:k] decode to metadata only; token k reaches into the body.
                assert text.startswith(before) and len(before) <= boundary
                assert len(upto) > boundary
                marker = "TITLE: " if doc.title else "CONTENT: "
                assert text[boundary:].startswith(marker)
                checked_untitled |= not doc.title
                if variant == "none":
                    assert k == 0
    assert checked_untitled


def test_loss_start_counts_a_token_spanning_the_boundary_as_body():
    # A tokenizer whose pieces are fixed strings: piece 2 spans the blank line and "TITLE".
    pieces = ["URL: a", "\n", "\n\nTI", "TLE: t"]
    text = "URL: a\n\n\nTITLE: t"
    ids = [0, 1, 2, 3]
    assert "".join(pieces[i] for i in ids) == text
    boundary = text.index("TITLE")
    k = loss_start(lambda ids: "".join(pieces[i] for i in ids), ids, boundary)
    assert k == 2


@pytest.mark.parametrize("name", ["sp_bpe", "hf_gpt2", "tiktoken"])
def test_variants_score_the_same_body_tokens_within_seq_length(toks, docs, name):
    codec = _codec(toks, name)
    variants = ["full", "url_only", "none"]
    for seq_length in (24, 64, 4096):
        for doc in docs[:12]:
            enc = encode_variants(doc, variants, "full", codec, seq_length)
            longest = max(
                loss_start(codec.detokenize, codec.tokenize(format_document(doc, v)),
                           len(metadata_prefix(doc, v))) for v in variants)
            if longest >= seq_length:  # the metadata alone fills the window: nothing to score
                assert enc is None
                continue
            assert enc is not None
            for e in enc.values():
                assert e.sequence[0] == codec.eod
                assert len(e.sequence) - 1 <= seq_length  # the model sees at most seq_length
            bodies = {v: codec.detokenize(e.sequence[e.start:]) for v, e in enc.items()}
            full_body = format_document(doc, "none")
            for body in bodies.values():
                # (a byte-level cut may split a character: U+FFFD at the end)
                assert full_body.startswith(body.rstrip("\ufffd"))
            if name == "sp_bpe":  # body encoded independently of its prefix: identical text
                assert len(set(bodies.values())) == 1
    assert encode_variants(docs[0], ["full"], "full", codec, 3) is None  # metadata fills it


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_degenerate_when_every_document_has_the_same_rate():
    tokens = np.array([10, 50, 7, 33])
    nll = 2.0 * tokens  # 2 nats a token everywhere
    low, high = bootstrap_ci(nll, tokens, samples=200, seed=1)
    assert low == pytest.approx(math.exp(2.0)) and high == pytest.approx(math.exp(2.0))
    assert corpus_perplexity(nll, tokens) == pytest.approx(math.exp(2.0))


def test_bootstrap_interval_is_seeded_contains_the_estimate_and_shrinks_with_more_documents():
    rng = np.random.default_rng(0)
    tokens = rng.integers(50, 500, 200)
    rates = rng.normal(3.0, 0.4, 200)
    nll = rates * tokens
    ppl = corpus_perplexity(nll, tokens)
    low, high = bootstrap_ci(nll, tokens, samples=1000, seed=42)
    assert (low, high) == bootstrap_ci(nll, tokens, samples=1000, seed=42)
    assert low < ppl < high
    # Four times the documents (same distribution): about half the width.
    low4, high4 = bootstrap_ci(np.tile(nll, 4), np.tile(tokens, 4), samples=1000, seed=42)
    assert 0.35 < (high4 - low4) / (high - low) < 0.65
    # Its width agrees with the normal approximation of the ratio estimator's spread.
    n, r = len(nll), nll.sum() / tokens.sum()
    se = math.sqrt(np.sum((nll - r * tokens) ** 2) / (n - 1) / n) / tokens.mean()
    expected = math.exp(r + 1.96 * se) - math.exp(r - 1.96 * se)
    assert 0.8 < (high - low) / expected < 1.2


def test_paired_ratio_sees_a_small_shift_that_separate_intervals_cannot():
    rng = np.random.default_rng(1)
    tokens = rng.integers(50, 500, 100)
    nll_b = rng.normal(3.0, 0.5, 100) * tokens  # documents differ a lot in difficulty
    nll_a = nll_b - 0.02 * tokens  # a is 0.02 nats/token better on every document
    ratio, low, high = paired_ratio_ci(nll_a, tokens, nll_b, tokens, samples=500, seed=3)
    assert ratio == pytest.approx(math.exp(-0.02))
    assert low == pytest.approx(math.exp(-0.02)) and high == pytest.approx(math.exp(-0.02))
    a_low, a_high = bootstrap_ci(nll_a, tokens, samples=500, seed=3)
    b_low, b_high = bootstrap_ci(nll_b, tokens, samples=500, seed=3)
    assert a_high > b_low  # the separate intervals overlap
    noisy = nll_a + rng.normal(0, 0.05, 100) * tokens
    ratio, low, high = paired_ratio_ci(noisy, tokens, nll_b, tokens, samples=500, seed=3)
    assert low < ratio < high < 1.0
    with pytest.raises(ValueError):
        paired_ratio_ci(nll_a[:5], tokens[:5], nll_b, tokens)


# --------------------------------------------------------------------------- a real model


@pytest.fixture(scope="module")
def tiny_model():
    from megatron_meta.models.build import build_model
    from megatron_meta.models.presets import PRESETS
    from megatron_meta.parallel import destroy_parallel, initialize_parallel

    initialize_parallel(1, seed=3)
    try:
        yield build_model(PRESETS["tiny"], vocab_size=600, seq_length=128, tp_size=1)
    finally:
        destroy_parallel()


def test_scores_match_a_direct_forward_and_an_untrained_model_is_near_uniform(tiny_model, toks, docs):
    import torch

    from megatron_meta.models.scoring import make_score_fn

    codec = _codec(toks, "sp_bpe")
    config = PerplexityConfig(load="-", data_manifest="-", variants=["full", "none"],
                              max_documents=6, seq_length=96, bootstrap_samples=100)
    sets = {"Asia": [d for d in docs if d.continent == "Asia"],
            "Europe": [d for d in docs if d.continent == "Europe"]}
    score = make_score_fn(tiny_model, micro_batch_size=4)
    results = evaluate_documents(score, codec, sets, config, "untrained", train_variant="full")
    assert [(r.region, r.variant) for r in results] == [
        ("Asia", "full"), ("Asia", "none"), ("Europe", "full"), ("Europe", "none")]
    for region in sets:
        full, none = [r for r in results if r.region == region]
        assert full.documents == none.documents == 6
        assert full.tokens == none.tokens  # the same body tokens in both variants
        assert full.document_ids == none.document_ids and len(full.document_ids) == 6
        assert sum(full.document_tokens) == full.tokens
        assert math.exp(sum(full.document_nll) / full.tokens) == pytest.approx(full.ppl)
        assert full.ratio_to_none == pytest.approx(full.ppl / none.ppl)
        assert full.ratio_ci_low <= full.ratio_to_none <= full.ratio_ci_high
        assert none.ratio_to_none is None
    padded = 640  # the tiny preset's embedding: 600 padded to a multiple of 128
    for r in results:
        assert r.ci_low <= r.ppl <= r.ci_high
        assert 0.7 * padded < r.ppl < 1.3 * padded  # init std 0.02: near-uniform predictions

    # The same NLL from the model's logits, computed here by hand for one document.
    enc = encode_variants(sets["Asia"][0], ["full"], "full", codec, 96)["full"]
    ids = torch.tensor([enc.sequence])
    positions = torch.arange(ids.shape[1] - 1).unsqueeze(0)
    with torch.no_grad():
        logits = tiny_model(ids[:, :-1], positions, None).float()
    logp = torch.log_softmax(logits[0], dim=-1)
    targets = ids[0, 1:]
    by_hand = -logp[torch.arange(len(targets)), targets][enc.start - 1:].sum().item()
    nll, count = score([enc.sequence], [enc.start])
    assert count[0] == len(enc.sequence) - enc.start
    assert nll[0] == pytest.approx(by_hand, rel=1e-4)


# --------------------------------------------------------------------------- results and report


def _results(per_document=False):
    rows = []
    for m, model in enumerate(["trained-full", "trained-none"]):
        for v, variant in enumerate(["full", "none"]):
            for g, region in enumerate(["America", "Asia", "Europe"]):
                ppl = 100.0 + 10 * g + 4 * v + 7 * m
                row = RegionResult(model, variant, region, 50, 9000, 9000 * math.log(ppl),
                                   ppl, ppl - 3, ppl + 3, model.split("-")[1])
                if per_document:  # 50 documents of 180 tokens, each at the same rate
                    row.document_ids = [f"d{i}" for i in range(50)]
                    row.document_tokens = [180] * 50
                    row.document_nll = [180 * math.log(ppl)] * 50
                    if variant == "full":
                        row.ratio_to_none = ppl / (ppl + 4)
                        row.ratio_ci_low, row.ratio_ci_high = row.ratio_to_none - 0.01, row.ratio_to_none + 0.01
                rows.append(row)
    return rows


def test_results_round_trip_through_json(tmp_path):
    rows = _results(per_document=True)
    config = PerplexityConfig(load="ckpt", data_manifest="m.json", variants=["full", "none"])
    path = str(tmp_path / "r.json")
    write_results(path, rows, config)
    assert read_results(path) == rows
    assert json.load(open(path))["config"]["variants"] == ["full", "none"]
    (tmp_path / "bad.json").write_text("{\"results\": 3}")
    with pytest.raises(DataError, match="bad.json"):
        read_results(str(tmp_path / "bad.json"))


def test_table_has_a_row_per_region_and_a_column_per_model_and_variant():
    rows = _results()
    table = format_table(rows)
    lines = table.splitlines()
    assert lines[0].split("|")[1].strip() == "region"
    assert [c.strip() for c in lines[0].split("|")[2:-1]] == [
        "trained-full / test full", "trained-full / test none",
        "trained-none / test full", "trained-none / test none"]
    body = {line.split("|")[1].strip(): line for line in lines[2:5]}
    assert set(body) == {"America", "Asia", "Europe"}
    europe = [c.strip() for c in body["Europe"].split("|")[2:-1]]
    assert europe[2] == "127.00 [124.00, 130.00]"  # trained-none / test full: 100 + 20 + 7
    with pytest.raises(DataError, match="--label"):
        format_table(rows + rows[:1])
    assert "paired" not in table  # no per-document scores: no paired tables


def test_paired_tables_compare_variants_and_the_metadata_model_with_the_baseline():
    table = format_table(_results(per_document=True))
    lines = table.splitlines()
    comparison = next(l for l in lines if l.startswith("| trained-full (test full) / trained-none"))
    # Europe: trained-full/test full = 120, trained-none/test none = 131.
    assert comparison.split("|")[-2].strip().startswith(f"{120 / 131:.3f} [")
    header = next(l for l in lines if "trained-full: test full / test none" in l)
    assert "trained-none: test full / test none" in header
    europe = [l for l in lines if l.startswith("| Europe")][-1]
    assert f"{120 / 124:.3f} [" in europe


def test_report_cli_writes_markdown_and_a_png(tmp_path, capsys):
    rows = _results()
    config = PerplexityConfig(load="x", data_manifest="m", variants=["full", "none"])
    paths = []
    for model in ("trained-full", "trained-none"):
        paths.append(str(tmp_path / f"{model}.json"))
        write_results(paths[-1], [r for r in rows if r.model == model], config)
    prefix = str(tmp_path / "out" / "ppl")
    assert eval_cli.main(["report", *paths, "--output-prefix", prefix]) == 0
    assert "trained-none / test none" in capsys.readouterr().out
    md = open(prefix + ".md").read()
    assert format_table(rows) in md
    with open(prefix + ".png", "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    assert width > 400 and height > 300
    import matplotlib.image

    pixels = matplotlib.image.imread(prefix + ".png")
    assert pixels.std() > 0.05  # bars drawn, not a blank canvas
    assert not [f for f in os.listdir(tmp_path / "out") if ".tmp" in f]


def test_perplexity_cli_rejects_a_manifest_without_test_documents(tmp_path):
    from megatron_meta.errors import MegatronMetaError

    with pytest.raises(MegatronMetaError, match="manifest not found"):
        eval_cli.main(["perplexity", "--load", str(tmp_path), "--data-manifest",
                       str(tmp_path / "none.manifest.json"), "--output", str(tmp_path / "r.json")])
    with pytest.raises(SystemExit):
        eval_cli.main(["perplexity", "--load", "x", "--data-manifest", "m", "--output", "o",
                       "--variants", "full", "--max-documents", "0"])
