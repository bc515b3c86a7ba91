"""Tokenizers: loading through megatron-core, SentencePiece training, exact batch encoding, and
when a metadata block and its body may be encoded apart."""

import os
import pickle
import sys

import numpy as np
import pytest
from preprocess_fixtures import TOKENIZER_TYPES, write_jsonl

from megatron_meta.errors import ConfigError, DataError
from megatron_meta.metadata.formatting import (
    VARIANTS,
    document_body,
    format_document,
    metadata_prefix,
)
from megatron_meta.tokenizer import decode, load_tokenizer
from megatron_meta.tokenizer.batch import BatchEncoder
from megatron_meta.tokenizer.proofs import NEWLINE_SAFE_PATTERNS, prefix_split_proof, sharing_plan
from megatron_meta.tokenizer.train import main as train_main
from megatron_meta.tokenizer.train import train_sentencepiece


def _texts(docs):
    return [
        format_document(d, v, form) for d in docs for v in VARIANTS for form in ("full", "domain")
    ]


@pytest.mark.parametrize("name", list(TOKENIZER_TYPES))
def test_every_library_round_trips_formatted_text_and_batch_equals_tokenize(toks, docs, name):
    tok = load_tokenizer(TOKENIZER_TYPES[name], toks[name])
    texts = _texts(docs)
    batch = BatchEncoder(tok)
    assert batch.kind != "per-text"
    library = pickle.loads(pickle.dumps(batch.library))  # as worker processes receive it
    for text, ids, lib_ids in zip(texts, batch(texts), library(texts)):
        assert ids.tolist() == lib_ids.tolist() == list(tok.tokenize(text))
        assert decode(tok, ids) == text  # newlines, double spaces, tabs, non-ASCII included
        assert library.decode(ids) == text
    assert tok.eod is not None and 0 <= tok.eod < tok.vocab_size


def test_trained_sentencepiece_settings(toks):
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    with open(toks["sp_bpe"], "rb") as f:
        proto.ParseFromString(f.read())
    norm, trainer = proto.normalizer_spec, proto.trainer_spec
    assert (
        norm.name == "identity" and not norm.add_dummy_prefix and not norm.remove_extra_whitespaces
    )
    assert trainer.byte_fallback and trainer.model_type == pb.TrainerSpec.BPE
    newline = [p for p in proto.pieces if "\n" in p.piece]
    assert [(p.piece, p.type) for p in newline] == [
        ("\n", pb.ModelProto.SentencePiece.USER_DEFINED)
    ]
    tok = load_tokenizer("SentencePieceTokenizer", toks["sp_bpe"])
    # No dummy prefix: a leading space and a text without one encode differently and round-trip.
    assert decode(tok, tok.tokenize(" lead")) == " lead"
    assert tok.tokenize("URL: x\n\n") == tok.tokenize("URL: x") + tok.tokenize("\n") * 2


def test_loading_writes_nothing_next_to_the_model(toks):
    folder = os.path.dirname(toks["sp_bpe"])
    before = sorted(os.listdir(folder))
    os.chmod(folder, 0o555)  # a read-only model folder must load too
    try:
        load_tokenizer("SentencePieceTokenizer", toks["sp_bpe"])
        load_tokenizer("HuggingFaceTokenizer", toks["hf_llama3"])
        load_tokenizer("TikTokenizer", toks["tiktoken"])
    finally:
        os.chmod(folder, 0o755)
    assert sorted(os.listdir(folder)) == before


@pytest.mark.parametrize(
    "name,safe",
    [
        ("sp_bpe", True),
        ("sp_unigram", False),
        ("hf_llama3", True),
        ("hf_gpt2", False),
        ("hf_gpt2_digits", False),
        ("sp_llama2", False),
        ("tiktoken", True),
    ],
)
def test_prefix_split_proof(toks, docs, name, safe):
    tok = load_tokenizer(TOKENIZER_TYPES[name], toks[name])
    proven, reason = prefix_split_proof(tok)
    assert proven is safe, reason
    if proven:  # the proof must agree with the tokenizer on every document and variant
        for d in docs:
            for v in VARIANTS:
                whole = tok.tokenize(format_document(d, v))
                assert whole == tok.tokenize(metadata_prefix(d, v)) + tok.tokenize(document_body(d))
        # ... and on any cut after a newline that precedes a non-space character
        import re

        cut = re.compile(r"(?<=\n)(?=\S)")
        texts = [format_document(d, "full") for d in docs] + [
            'A\n1 b\n"q"\n\u2014x\n\n(y) z.\n\n\n!\n  indented\n\tTab\n\u6771\u4eac\nURL: /\n?x'
        ]
        for text in texts:
            pieces = cut.split(text)
            assert len(pieces) > 1
            assert tok.tokenize(text) == [i for p in pieces for i in tok.tokenize(p)]


@pytest.mark.parametrize(
    "name,family",
    [
        ("sp_bpe", "atomic-newline"),
        ("sp_unigram", None),
        ("hf_llama3", "newline-run"),
        ("hf_gpt2", "gpt2-regex"),
        ("hf_gpt2_digits", "gpt2-regex"),
        ("sp_llama2", "dummy-prefix"),
        ("tiktoken", "newline-run"),
    ],
)
def test_sharing_plan_cuts_are_exact(toks, docs, name, family):
    """Each family's plan, applied by hand to every document and variant: the pieces' ids
    (sentinel stripped) joined give exactly the whole text's ids."""
    tok = load_tokenizer(TOKENIZER_TYPES[name], toks[name])
    plan, reason = sharing_plan(tok)
    assert (plan.family if plan else None) == family, reason
    if plan is None:
        return
    context = list(tok.tokenize(plan.context)) if plan.context else []

    def ids(piece, behind):
        if not (behind and context):
            return list(tok.tokenize(piece))
        got = list(tok.tokenize(plan.context + piece))
        assert got[: len(context)] == context
        return got[len(context) :]

    for d in docs:
        for v in VARIANTS:
            prefix = metadata_prefix(d, v)
            lines = [line + "\n" for line in prefix.split("\n")[:-2]] if prefix else []
            if lines and plan.split_blank_line:
                lines.append("\n")
            elif lines:
                lines[-1] += "\n"
            pieces = lines + [document_body(d)]
            joined = [i for k, p in enumerate(pieces) for i in ids(p, k > 0)]
            assert joined == tok.tokenize(format_document(d, v)), (v, d.id)


def test_gpt2_style_pretokenizer_really_breaks_prefix_splitting(toks, docs):
    # Why the proof matters: GPT-2's regex makes a trailing "\n\n" one pre-token ("ĊĊ").
    tok = load_tokenizer("HuggingFaceTokenizer", toks["hf_gpt2"])
    d = docs[1]
    whole = tok.tokenize(format_document(d, "full"))
    assert whole != tok.tokenize(metadata_prefix(d, "full")) + tok.tokenize(document_body(d))


def test_megatron_tiktoken_patterns_are_the_analysed_ones():
    # If megatron-core changes its patterns, sharing switches off until they are re-analysed.
    from megatron.core.tokenizers.text.libraries import tiktoken_tokenizer as tt

    assert tt._PATTERN_TIKTOKEN_V1 in NEWLINE_SAFE_PATTERNS
    assert tt._PATTERN_TIKTOKEN_V2 in NEWLINE_SAFE_PATTERNS


def test_openai_patterns_are_the_analysed_ones(monkeypatch):
    # cl100k and o200k as the tiktoken package defines them (no download: ranks stubbed out).
    import tiktoken_ext.openai_public as openai

    monkeypatch.setattr(openai, "load_tiktoken_bpe", lambda *a, **k: {})
    for name in ("cl100k_base", "o200k_base"):
        assert openai.ENCODING_CONSTRUCTORS[name]()["pat_str"] in NEWLINE_SAFE_PATTERNS, name


def test_tiktoken_decode_is_exact_for_split_characters(toks):
    tok = load_tokenizer("TikTokenizer", toks["tiktoken"])
    text = "東京 and Zürich — “quoted”"
    ids = tok.tokenize(text)
    assert decode(tok, ids) == text
    assert decode(tok, [tok.eod] + ids) == "</s>" + text


def test_batch_encoder_falls_back_when_it_disagrees(toks):
    tok = load_tokenizer("SentencePieceTokenizer", toks["sp_bpe"])
    batch = BatchEncoder(tok)
    batch.library = lambda texts: [np.zeros(1, np.int32) for _ in texts]  # a broken fast path
    assert not batch.verify(["some text"])
    assert batch.kind == "per-text"
    assert batch(["some text"])[0].tolist() == tok.tokenize("some text")


def test_load_errors(toks, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="not supported"):
        load_tokenizer("GPT2BPE", toks["sp_bpe"])
    with pytest.raises(ConfigError, match="no such file"):
        load_tokenizer("SentencePieceTokenizer", str(tmp_path / "missing.model"))
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="cannot load"):
        load_tokenizer("SentencePieceTokenizer", str(bad))
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(ConfigError, match="pip install transformers"):
        load_tokenizer("HuggingFaceTokenizer", toks["hf_llama3"])


def test_train_sentencepiece_errors(tmp_path):
    with pytest.raises(DataError, match="no documents"):
        train_sentencepiece([], str(tmp_path / "t"), 500)
    with pytest.raises(ConfigError, match="vocab-size"):
        train_sentencepiece(["x"], str(tmp_path / "t"), 10)
    assert not list(tmp_path.iterdir())


def test_train_tokenizer_cli_on_jsonl(tmp_path, docs):
    data = write_jsonl(str(tmp_path / "c.jsonl"), docs)
    out = tmp_path / "out" / "tok.model"
    assert (
        train_main(
            [
                "--input",
                data,
                "--output-prefix",
                str(out),
                "--vocab-size",
                "500",
                "--metadata-variants",
                "full,url_only,none",
                "--max-documents",
                "40",
            ]
        )
        == 0
    )
    assert out.exists() and (tmp_path / "out" / "tok.vocab").exists()
    assert not [p for p in os.listdir(tmp_path / "out") if ".tmp" in p]
    tok = load_tokenizer("SentencePieceTokenizer", str(out))
    for d in docs[40:]:  # unseen documents round-trip too
        text = format_document(d, "full")
        assert decode(tok, tok.tokenize(text)) == text
    assert prefix_split_proof(tok)[0]


def test_train_tokenizer_cli_reports_bad_record_location(tmp_path, docs):
    data = write_jsonl(str(tmp_path / "c.jsonl"), docs[:5], ["{not json"])
    with pytest.raises(DataError, match=r"c\.jsonl:6"):
        train_main(["--input", data, "--output-prefix", str(tmp_path / "t"), "--vocab-size", "400"])
    assert not list(p for p in tmp_path.iterdir() if p.name.startswith("t."))


@pytest.mark.parametrize(
    "edit,why",
    [
        (lambda s: s["pre_tokenizer"].update(add_prefix_space=True), "prefix space"),
        (lambda s: s.update(normalizer={"type": "NFC"}), "normalizer"),
        (lambda s: s["pre_tokenizer"].update(use_regex=False), "without a regex"),
    ],
)
def test_unproven_hugging_face_variants_fall_back_and_say_why(
    toks, docs, tmp_path, caplog, edit, why
):
    import json
    import logging

    from megatron_meta.preprocess.pipeline import EncoderConfig
    from megatron_meta.preprocess.sharing import choose_shared_body

    with open(toks["hf_gpt2"], encoding="utf-8") as f:
        spec = json.load(f)
    edit(spec)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    tok = load_tokenizer("HuggingFaceTokenizer", str(path))
    plan, reason = sharing_plan(tok)
    assert plan is None and why in reason
    config = EncoderConfig("HuggingFaceTokenizer", str(path), list(VARIANTS))
    with caplog.at_level(logging.INFO, logger="megatron_meta.preprocess.sharing"):
        shared, library = choose_shared_body(tok, config, docs[:4])
    assert shared is None and library is not None  # still batch-encoded, one call a chunk
    assert f"no shared body: {reason}" in caplog.text


def test_tiktoken_batch_is_exact_with_and_without_special_tokens(toks):
    # The batch path skips the special-token scan for texts without "<"; texts with special
    # tokens (encoded as specials, as megatron-core does) or a lone "<" take the full path.
    tok = load_tokenizer("TikTokenizer", toks["tiktoken"])
    texts = ["a <s> b </s>", "x < y", "<SPECIAL_5>", "plain text\n\nTITLE: x", ""]
    batch = BatchEncoder(tok)
    assert batch.kind == "tiktoken-batch"
    for text, ids in zip(texts, batch(texts)):
        assert ids.tolist() == list(tok.tokenize(text))
    assert tok.eod in batch(["</s>"])[0].tolist()
