"""Preprocessing: every shard document is exactly the tokenizer's encoding of its formatted text."""

import filecmp
import json
import os

import numpy as np
import pytest
from preprocess_fixtures import TOKENIZER_TYPES, make_documents, write_jsonl

from megatron_meta.corpora.bad_records import BadRecords
from megatron_meta.corpora.records import Document
from megatron_meta.corpora.registry import CorpusSpec, iter_documents
from megatron_meta.metadata.formatting import VARIANTS, format_document, metadata_prefix
from megatron_meta.preprocess.holdout import HoldoutConfig
from megatron_meta.manifest import load_manifest
from megatron_meta.preprocess.runner import PreprocessConfig, run_preprocess
from megatron_meta.tokenizer import decode, load_tokenizer

ALL = list(VARIANTS)
TYPES = {**TOKENIZER_TYPES, "smollm2": "HuggingFaceTokenizer"}  # + the real SmolLM2 tokenizer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, docs):
    return write_jsonl(str(tmp_path_factory.mktemp("corpus") / "news.jsonl"), docs)


def run(out_dir, corpus, toks, name="sp_bpe", variants=ALL, **kw):
    kw.setdefault("workers", 0)
    config = PreprocessConfig(
        corpus=CorpusSpec(inputs=[corpus]),
        output_prefix=os.path.join(str(out_dir), "out"),
        tokenizer_type=TYPES[name],
        tokenizer_model=toks[name],
        variants=list(variants),
        progress_bar=False,
        **kw,
    )
    return run_preprocess(config)


def read_documents(prefix):
    """Each document of a shard as a list of its sequences (arrays), via megatron-core."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    ds = IndexedDataset(prefix)
    bounds = ds.document_indices
    # Copy: the arrays view a memory map that closes with the dataset.
    return [
        [np.array(ds[i]) for i in range(bounds[d], bounds[d + 1])] for d in range(len(bounds) - 1)
    ]


def check_shards(result, docs_by_region, tok, url_form="full", append_eod=True):
    """The acceptance check: ids, decoding and sidecar counts of every document of every shard."""
    for shard in result.manifest.shards:
        expected_docs = docs_by_region[shard.region]
        got = read_documents(shard.prefix)
        sidecar = np.load(shard.metadata_tokens)
        assert sidecar.dtype == np.int32 and len(sidecar) == len(got) == len(expected_docs)
        assert shard.documents == len(got)
        assert shard.tokens == sum(len(s) for seqs in got for s in seqs)
        for doc, seqs, meta in zip(expected_docs, got, sidecar):
            text = format_document(doc, shard.variant, url_form)
            ids = np.concatenate(seqs).tolist()
            want = list(tok.tokenize(text)) + ([tok.eod] if append_eod else [])
            assert ids == want, (shard.variant, doc.id)
            body_ids = ids[:-1] if append_eod else ids
            assert decode(tok, body_ids) == text
            prefix = metadata_prefix(doc, shard.variant, url_form)
            assert decode(tok, ids[:meta]) == prefix  # the tokens before the TITLE: token
            assert decode(tok, body_ids[meta:]).startswith(("TITLE: ", "CONTENT: "))
            if not prefix:
                assert meta == 0


@pytest.mark.parametrize("name", list(TOKENIZER_TYPES))
def test_every_variant_matches_tokenizer_encoding(tmp_path, corpus, toks, docs, name):
    result = run(tmp_path, corpus, toks, name, append_eod=True)
    assert result.shared_body == (name != "sp_unigram")  # every family but unigram shares
    tok = load_tokenizer(TOKENIZER_TYPES[name], toks[name])
    assert [s.variant for s in result.manifest.shards] == ALL
    check_shards(result, {None: docs}, tok)


def test_shared_body_gives_the_same_bytes_as_whole_text(tmp_path, corpus, toks):
    a = run(tmp_path / "a", corpus, toks, append_eod=True, url_form="domain")
    b = run(tmp_path / "b", corpus, toks, append_eod=True, url_form="domain", shared_body="off")
    assert a.shared_body and not b.shared_body
    for sa, sb in zip(a.manifest.shards, b.manifest.shards):
        for ext in (".bin", ".idx", ".metadata_tokens.npy"):
            assert filecmp.cmp(sa.prefix + ext, sb.prefix + ext, shallow=False)
    tok = load_tokenizer("SentencePieceTokenizer", toks["sp_bpe"])
    check_shards(a, {None: make_documents()}, tok, url_form="domain")


def _awkward_documents():
    """Values that break naive cuts: empty or space-ended URLs, a space-ended country, a title
    line of spaces, digits and newlines at every boundary, an untitled one-line text."""
    base = make_documents(6, seed=3)
    urls = ["", "https://x.example/a ", "https://x.example/2024", "www.y.example\t", "u ", "h/?"]
    titles = ["", "  ", "1999", "Title\n", "x", '"q"']
    texts = ["one line only", "\n\nstarts with newlines", "9 digits 10", " space", "a\n\n\nb", "z"]
    return [
        Document(**{**d.to_json(), "url": u, "title": t, "text": x, "country": c})
        for d, u, t, x, c in zip(base, urls, titles, texts, ["ng", "gb ", "us", "in", "ke", "ca"])
    ]


@pytest.mark.parametrize("name", ["hf_gpt2", "hf_gpt2_digits", "sp_llama2", "smollm2"])
def test_awkward_values_and_real_smollm2(tmp_path, corpus, toks, docs, name, request):
    """Where a plan needs care (GPT-2 regex guards, the dummy-prefix sentinel), and the real
    SmolLM2 tokenizer: every document still equals its whole text's encoding."""
    from megatron_meta.preprocess.pipeline import DocumentEncoder, EncoderConfig
    from megatron_meta.preprocess.sharing import choose_shared_body

    if name == "smollm2":
        toks = {name: request.getfixturevalue("smollm2_hf")}
        result = run(tmp_path, corpus, toks, name, append_eod=True)  # end to end, real model
        assert result.shared_body
        check_shards(result, {None: docs}, load_tokenizer(TYPES[name], toks[name]))
    tok = load_tokenizer(TYPES[name], toks[name])
    # Documents straight to the encoder: readers strip values, other callers may not.
    awkward = _awkward_documents()
    config = EncoderConfig(TYPES[name], toks[name], ALL, append_eod=False, dtype="int32")
    config.shared_body, config.library = choose_shared_body(tok, config, awkward)
    assert config.shared_body
    encoder = DocumentEncoder(config, tok)
    got = encoder.encode(awkward)
    for variant in ALL:
        lengths = np.cumsum(got[variant].sequence_lengths)[:-1]
        for doc, ids, meta in zip(
            awkward, np.split(got[variant].tokens, lengths), got[variant].metadata_tokens
        ):
            text = format_document(doc, variant)
            assert ids.tolist() == list(tok.tokenize(text)), (variant, doc)
            assert decode(tok, ids[:meta]) == metadata_prefix(doc, variant)
    if name.startswith("hf_gpt2"):  # the guard sent the space-ended values to whole texts
        assert [encoder._pieces.guarded(d, ALL) for d in awkward] == [True, True, False] * 2


def test_without_eod_and_token_dtype(tmp_path, corpus, toks, docs):
    result = run(tmp_path, corpus, toks, "tiktoken", variants=["full"])
    tok = load_tokenizer("TikTokenizer", toks["tiktoken"])
    check_shards(result, {None: docs}, tok, append_eod=False)
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    assert IndexedDataset(result.manifest.shards[0].prefix).index.dtype == np.uint16


def test_int32_shards_for_large_vocabularies(tmp_path, corpus, toks, docs, monkeypatch):
    # A >= 65,500-id vocabulary (Llama-3: 128,256) gets int32 tokens; same ids either way.
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from megatron_meta.preprocess import runner

    monkeypatch.setattr(runner, "token_dtype", lambda vocab_size: np.dtype(np.int32))
    result = run(tmp_path, corpus, toks, variants=["full", "none"], append_eod=True, workers=2)
    assert IndexedDataset(result.manifest.shards[0].prefix).index.dtype == np.int32
    check_shards(result, {None: docs}, load_tokenizer("SentencePieceTokenizer", toks["sp_bpe"]))


def test_one_and_two_workers_are_byte_identical(tmp_path, corpus, toks):
    kw = dict(
        variants=["full", "none"],
        append_eod=True,
        split_by="continent",
        chunk_bytes=2000,
        holdout=HoldoutConfig(test_per_region=2, valid_fraction=0.2, seed=3),
    )
    outs = {w: run(tmp_path / f"w{w}", corpus, toks, workers=w, **kw) for w in (0, 1, 2)}
    names = sorted(os.listdir(tmp_path / "w1"))
    assert names == sorted(os.listdir(tmp_path / "w2")) == sorted(os.listdir(tmp_path / "w0"))
    assert any(n.endswith(".bin") for n in names)
    for n in names:
        if n.endswith(".manifest.json"):
            continue
        assert filecmp.cmp(tmp_path / "w1" / n, tmp_path / "w2" / n, shallow=False), n
        assert filecmp.cmp(tmp_path / "w0" / n, tmp_path / "w2" / n, shallow=False), n
    assert outs[1].documents == outs[2].documents


@pytest.mark.parametrize("name", ["hf_llama3", "tiktoken"])
def test_worker_processes_with_other_libraries(tmp_path, corpus, toks, name):
    # Rust (Hugging Face) and tiktoken thread pools used in the parent must not break workers.
    a = run(
        tmp_path / "a", corpus, toks, name, variants=["full", "none"], workers=0, chunk_bytes=3000
    )
    b = run(
        tmp_path / "b", corpus, toks, name, variants=["full", "none"], workers=2, chunk_bytes=3000
    )
    for sa, sb in zip(a.manifest.shards, b.manifest.shards):
        for ext in (".bin", ".idx", ".metadata_tokens.npy"):
            assert filecmp.cmp(sa.prefix + ext, sb.prefix + ext, shallow=False)


@pytest.mark.parametrize("split_by", ["continent", "country"])
def test_split_by_region(tmp_path, corpus, toks, docs, split_by):
    result = run(
        tmp_path, corpus, toks, variants=["full", "none"], split_by=split_by, append_eod=True
    )
    key = (lambda d: d.continent) if split_by == "continent" else (lambda d: d.country)
    by_region = {}
    for d in docs:
        by_region.setdefault(key(d), []).append(d)
    regions = {s.region for s in result.manifest.shards}
    assert regions == set(by_region)
    for s in result.manifest.shards:
        name = os.path.basename(s.prefix)
        assert name == f"out_{s.variant}_{s.region.lower()}_text_document"
    tok = load_tokenizer("SentencePieceTokenizer", toks["sp_bpe"])
    check_shards(result, by_region, tok)


def _held_out(result):
    out = {}
    for h in result.manifest.holdout:
        with open(h.path, encoding="utf-8") as f:
            out[(h.split, h.region)] = [Document.from_json(json.loads(line)) for line in f]
        assert len(out[(h.split, h.region)]) == h.documents
    return out


def test_holdout_is_exact_excluded_and_reproducible(tmp_path, corpus, toks, docs):
    hold = HoldoutConfig(test_per_region=3, valid_fraction=0.25, seed=42)
    a = run(
        tmp_path / "a",
        corpus,
        toks,
        variants=["full"],
        split_by="continent",
        holdout=hold,
        append_eod=True,
    )
    b = run(
        tmp_path / "b",
        corpus,
        toks,
        variants=["full"],
        split_by="continent",
        holdout=HoldoutConfig(3, 0.25, 42),
        append_eod=True,
        workers=2,
    )
    c = run(
        tmp_path / "c",
        corpus,
        toks,
        variants=["full"],
        split_by="continent",
        holdout=HoldoutConfig(3, 0.25, 7),
        append_eod=True,
    )
    ha, hb, hc = _held_out(a), _held_out(b), _held_out(c)
    assert ha == hb and ha != hc  # same seed same split; another seed another split
    tests = {k: v for k, v in ha.items() if k[0] == "test"}
    assert sorted(r for _, r in tests) == ["Africa", "America", "Asia", "Europe"]
    assert all(len(v) == 3 and all(d.continent == r for d in v) for (_, r), v in tests.items())
    held_ids = {d.id for v in ha.values() for d in v}
    valid = sum(len(v) for k, v in ha.items() if k[0] == "valid")
    assert 0 < valid < len(docs) - 12
    # Training shards hold exactly the other documents, in input order.
    by_region = {}
    for d in docs:
        if d.id not in held_ids:
            by_region.setdefault(d.continent, []).append(d)
    tok = load_tokenizer("SentencePieceTokenizer", toks["sp_bpe"])
    check_shards(a, by_region, tok)
    assert a.held_out == len(held_ids)
    # Held-out records keep their metadata for evaluation.
    original = {d.id: d for d in docs}
    assert all(original[d.id] == d for v in ha.values() for d in v)


def test_holdout_larger_than_a_region_is_an_error(tmp_path, corpus, toks):
    from megatron_meta.errors import ConfigError

    with pytest.raises(ConfigError, match="--holdout-test 7"):
        run(tmp_path, corpus, toks, split_by="country", holdout=HoldoutConfig(test_per_region=7))
    assert not list(tmp_path.iterdir())


def test_manifest_contents(tmp_path, corpus, toks, docs):
    run(
        tmp_path,
        corpus,
        toks,
        variants=["full", "none"],
        split_by="continent",
        holdout=HoldoutConfig(test_per_region=2),
        append_eod=True,
        url_form="domain",
        command=["megatron-meta", "preprocess", "--x"],
    )
    path = tmp_path / "out.manifest.json"
    raw = json.loads(path.read_text())
    assert raw["format_version"] == 1
    assert raw["tokenizer"]["type"] == "SentencePieceTokenizer"
    assert not os.path.isabs(raw["shards"][0]["prefix"])  # relative to the manifest folder
    assert raw["shards"][0]["prefix"] == "out_full_africa_text_document"
    assert (
        raw["shards"][0]["metadata_tokens"] == "out_full_africa_text_document.metadata_tokens.npy"
    )
    assert raw["holdout"][0]["path"] == "out_test_africa.jsonl"
    m = load_manifest(str(path))
    tok = load_tokenizer("SentencePieceTokenizer", toks["sp_bpe"])
    assert (m.tokenizer.vocab_size, m.tokenizer.eod_id) == (tok.vocab_size, tok.eod)
    assert os.path.samefile(m.tokenizer.model, toks["sp_bpe"])
    assert m.variants() == ["full", "none"] and m.regions() == [
        "Africa",
        "America",
        "Asia",
        "Europe",
    ]
    assert (m.split_by, m.url_form, m.append_eod) == ("continent", "domain", True)
    assert m.command == ["megatron-meta", "preprocess", "--x"] and m.skipped == {}
    assert sum(s.documents for s in m.shards_for("full")) == len(docs) - 8
    assert [(h.split, h.region, h.documents) for h in m.holdout] == [
        ("test", r, 2) for r in ["Africa", "America", "Asia", "Europe"]
    ]


def test_split_sentences_keeps_exact_text(tmp_path, corpus, toks, docs):
    result = run(
        tmp_path,
        corpus,
        toks,
        variants=["full", "none"],
        split_sentences=True,
        append_eod=True,
        workers=2,
        chunk_bytes=4000,
    )
    tok = load_tokenizer("SentencePieceTokenizer", toks["sp_bpe"])
    assert all(s.prefix.endswith("_text_sentence") for s in result.manifest.shards)
    assert load_manifest(result.manifest_path).split_sentences
    multi = 0
    for shard in result.manifest.shards:
        got = read_documents(shard.prefix)
        sidecar = np.load(shard.metadata_tokens)
        assert len(got) == len(docs)
        for doc, seqs, meta in zip(docs, got, sidecar):
            multi += len(seqs) > 1
            texts = [decode(tok, s) for s in seqs]
            assert "".join(texts) == format_document(doc, shard.variant)  # nothing lost
            for s, t in zip(seqs[:-1], texts):
                assert s.tolist() == tok.tokenize(t)  # each sentence is its own encoding
            assert seqs[-1].tolist() == tok.tokenize(texts[-1]) + [tok.eod]
            assert decode(tok, seqs[0][:meta]) == metadata_prefix(doc, shard.variant)
    assert multi > len(docs)  # most documents have several sentences


def test_gpt_dataset_reads_a_shard(tmp_path, corpus, toks):
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder,
    )
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    result = run(tmp_path, corpus, toks, variants=["full"], append_eod=True)
    tok = load_tokenizer("SentencePieceTokenizer", toks["sp_bpe"])
    config = GPTDatasetConfig(
        random_seed=1,
        sequence_length=32,
        blend=([result.manifest.shards[0].prefix], None),
        split="100,0,0",
        tokenizer=tok,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        path_to_cache=str(tmp_path / "cache"),
        mid_level_dataset_surplus=0.005,
    )
    train, _, _ = BlendedMegatronDatasetBuilder(
        GPTDataset, [20, None, None], lambda: True, config
    ).build()
    sample = train[0]
    assert sample["tokens"].shape[0] == 32 and len(train) >= 20
    assert int(sample["tokens"].max()) < tok.vocab_size


def test_workers_are_not_forked_from_a_multithreaded_process():
    # A fork of a process with other threads can inherit a held lock and hang (seen in CI: a
    # worker forked after Trainer/harness tests waited on a futex forever).
    import threading

    from megatron_meta.preprocess.workers import _thread_count, start_method

    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
    try:
        assert _thread_count() >= 2 and start_method() != "fork"
    finally:
        stop.set()
        helper.join()
