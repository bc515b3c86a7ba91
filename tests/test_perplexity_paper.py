"""Perplexity under ``--protocol paper`` on a model whose log-likelihoods are known in closed form
(a context-free "unigram" Llama with SmolLM2's tokenizer): BOS + text truncated as a whole (the
metadata counts against the 1,024), loss from the token after TITLE, the All / leave-one-out sets."""

import numpy as np
import pytest
import torch
from hf_fixtures import make_unigram_llama

from megatron_meta.corpora.records import Document

BOS = 1


def docs(region, cc, n):
    return [Document(f"{cc}{i}", f"https://news.{cc}/story-{i}", cc, region, f"Story {i} title",
                     " ".join(f"word{j}" for j in range(12 + 3 * i))) for i in range(n)]


@pytest.fixture(scope="module")
def unigram(tmp_path_factory, smollm2_hf):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from megatron_meta.evaluation.perplexity.hf_scoring import hf_codec, hf_score_fn

    logits = torch.linspace(-3.0, 3.0, 49152)
    folder = make_unigram_llama(tmp_path_factory.mktemp("uni"), smollm2_hf, logits)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(smollm2_hf)
    logp = torch.log_softmax(logits.double(), 0).numpy()
    return hf_score_fn(model, 4), hf_codec(tok), tok, logp


def by_hand(tok, logp, doc, variant, seq_length):
    from megatron_meta.metadata.formatting import format_document

    ids = ([BOS] + tok.encode(format_document(doc, variant, "full"), add_special_tokens=False))[:seq_length]
    title = tok.encode("TITLE:", add_special_tokens=False)
    pos = next(i for i in range(len(ids)) if ids[i:i + len(title)] == title)
    scored = ids[pos + 1:]
    return -float(sum(logp[t] for t in scored)), len(scored)


def test_paper_perplexity_equals_the_hand_computation(unigram):
    from megatron_meta.evaluation.perplexity.evaluate import PerplexityConfig, evaluate_documents

    score, codec, tok, logp = unigram
    sets = {"Africa": docs("Africa", "ng", 5), "Asia": docs("Asia", "in", 4), "Europe": docs("Europe", "ie", 6)}
    seq = 40  # cuts into the body; the metadata variant keeps fewer body tokens
    config = PerplexityConfig("-", "-", ["full", "none"], max_documents=3, seq_length=seq,
                              bootstrap_samples=50, protocol="paper", bos_id=BOS)
    results = evaluate_documents(score, codec, sets, config, "uni")
    regions = {r.region for r in results}
    assert regions == {"Africa", "Asia", "Europe", "All", "no-Africa", "no-Asia", "no-Europe"}
    for r in results:
        if r.region not in sets:
            continue
        picked = np.random.default_rng(42).choice(len(sets[r.region]), size=3, replace=False)
        expected = [sets[r.region][int(i)] for i in picked]
        assert r.document_ids == [d.id for d in expected]
        for d, nll, n in zip(expected, r.document_nll, r.document_tokens):
            want_nll, want_n = by_hand(tok, logp, d, r.variant, seq)
            assert n == want_n and nll == pytest.approx(want_nll, rel=1e-6)
        assert r.ppl == pytest.approx(np.exp(sum(r.document_nll) / sum(r.document_tokens)), rel=1e-9)
    full = next(r for r in results if r.region == "Africa" and r.variant == "full")
    none = next(r for r in results if r.region == "Africa" and r.variant == "none")
    assert sum(full.document_tokens) < sum(none.document_tokens)  # truncation includes metadata
    # All: one document per region a group, up to the smallest region (Asia, 4) -> 12 documents
    all_full = next(r for r in results if r.region == "All" and r.variant == "full")
    assert all_full.documents == 3
    from megatron_meta.evaluation.perplexity.paper import paper_test_sets

    expanded = paper_test_sets(sets, 42)
    assert len(expanded["All"]) == 12 and len(expanded["no-Asia"]) == 10  # min(Africa 5, Europe 6) x 2
    assert {d.id for d in expanded["no-Asia"]} == {f"{cc}{i}" for cc in ("ng", "ie") for i in range(5)}
