"""``megatron-meta inspect``: counts and a decoded document."""

import os

import pytest
from preprocess_fixtures import make_documents, training_texts, write_jsonl

from megatron_meta.cli import run_guarded
from megatron_meta.corpora.registry import CorpusSpec
from megatron_meta.metadata.formatting import document_body, metadata_prefix
from megatron_meta.preprocess.inspect import main as inspect_main
from megatron_meta.preprocess.runner import PreprocessConfig, run_preprocess


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from megatron_meta.tokenizer.train import train_sentencepiece

    docs = make_documents(16)
    folder = tmp_path_factory.mktemp("inspect")
    model = train_sentencepiece(training_texts(docs), str(folder / "sp"), 400, num_threads=1)
    corpus = write_jsonl(str(folder / "c.jsonl"), docs)
    result = run_preprocess(
        PreprocessConfig(
            corpus=CorpusSpec(inputs=[corpus]),
            output_prefix=str(folder / "data" / "out"),
            tokenizer_type="SentencePieceTokenizer",
            tokenizer_model=model,
            variants=["full", "none"],
            append_eod=True,
            workers=0,
            progress_bar=False,
        )
    )
    return docs, model, result


def test_counts_and_decoded_document_from_manifest(built, capsys):
    docs, _, result = built
    shard = result.manifest.shards[0]
    assert inspect_main([shard.prefix + ".bin", "--document", "5", "--max-chars", "100000"]) == 0
    out = capsys.readouterr().out
    assert f"documents: {len(docs)}" in out
    assert f"tokens: {shard.tokens}" in out
    assert "dtype: uint16" in out and "variant: full" in out
    assert repr(metadata_prefix(docs[5], "full")) in out  # the metadata tokens, marked
    assert document_body(docs[5]) in out


def test_explicit_tokenizer_and_no_manifest(built, tmp_path, capsys):
    docs, model, result = built
    shard = result.manifest.shards[1]  # variant none
    for ext in (".bin", ".idx"):  # a copy in a folder without a manifest
        os.symlink(shard.prefix + ext, str(tmp_path / ("s" + ext)))
    assert inspect_main([str(tmp_path / "s")]) == 0
    assert "pass --tokenizer-type" in capsys.readouterr().out
    args = [
        str(tmp_path / "s"),
        "--document",
        "2",
        "--tokenizer-type",
        "SentencePieceTokenizer",
        "--tokenizer-model",
        model,
    ]
    assert inspect_main(args) == 0
    out = capsys.readouterr().out
    assert "[metadata]" not in out  # variant none: no metadata tokens
    assert document_body(docs[2])[:50] in out


def test_errors(built, tmp_path, capsys):
    _, _, result = built
    assert run_guarded(inspect_main, [str(tmp_path / "missing")], "inspect") == 2
    assert "missing.bin" in capsys.readouterr().err
    shard = result.manifest.shards[0].prefix
    assert run_guarded(inspect_main, [shard, "--document", "99"], "inspect") == 2
    assert "--document 99" in capsys.readouterr().err
