"""The manifest round-trips with relative paths and rejects damaged or mismatched files."""

import json
import os

import numpy as np
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

from megatron_meta.errors import DataError
from megatron_meta.manifest import (
    HoldoutEntry,
    Manifest,
    ShardEntry,
    TokenizerInfo,
    load_manifest,
    write_manifest,
)


def _write_shard(prefix, docs):
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for d in docs:
        builder.add_document(np.asarray(d, dtype=np.uint16), [len(d)])
    builder.finalize(prefix + ".idx")


def _manifest(tmp_path):
    prefix = str(tmp_path / "data" / "corpus_full_europe_text_document")
    os.makedirs(tmp_path / "data")
    _write_shard(prefix, [[1, 2, 3], [4, 5]])
    np.save(prefix + ".metadata_tokens.npy", np.array([1, 0], dtype=np.int32))
    (tmp_path / "tok.model").write_bytes(b"x")
    return Manifest(
        tokenizer=TokenizerInfo("SentencePieceTokenizer", str(tmp_path / "tok.model"), 100, 0),
        shards=[ShardEntry(prefix, "full", "Europe", 2, 5, prefix + ".metadata_tokens.npy")],
        holdout=[HoldoutEntry(str(tmp_path / "data" / "corpus_test_europe.jsonl"), "test", "Europe", 3)],
        skipped={"missing_text": 2},
        command=["megatron-meta", "preprocess"],
        split_by="continent",
    )


def test_round_trip_with_relative_paths(tmp_path):
    path = str(tmp_path / "data" / "corpus.manifest.json")
    write_manifest(_manifest(tmp_path), path)
    raw = json.loads(open(path).read())
    assert raw["format_version"] == 1
    assert raw["shards"][0]["prefix"] == "corpus_full_europe_text_document"
    assert raw["tokenizer"]["model"] == os.path.join("..", "tok.model")
    assert not os.path.exists(path + ".tmp")

    loaded = load_manifest(path)
    assert loaded.shards[0].prefix == str(tmp_path / "data" / "corpus_full_europe_text_document")
    assert loaded.tokenizer.model == str(tmp_path / "tok.model")
    assert loaded.variants() == ["full"]
    assert loaded.regions() == ["Europe"]
    assert loaded.skipped == {"missing_text": 2}
    assert loaded.holdout[0].documents == 3


def test_missing_shard_file_is_named(tmp_path):
    path = str(tmp_path / "data" / "corpus.manifest.json")
    write_manifest(_manifest(tmp_path), path)
    os.remove(tmp_path / "data" / "corpus_full_europe_text_document.idx")
    with pytest.raises(DataError, match=r"corpus_full_europe_text_document\.idx"):
        load_manifest(path)


def test_missing_and_damaged_manifest(tmp_path):
    with pytest.raises(DataError, match="run `megatron-meta preprocess`"):
        load_manifest(str(tmp_path / "nope.manifest.json"))
    bad = tmp_path / "bad.manifest.json"
    bad.write_text('{"format_version": 1, "shards": [')
    with pytest.raises(DataError, match="not valid JSON"):
        load_manifest(str(bad))
    other = tmp_path / "other.manifest.json"
    other.write_text('{"format_version": 99}')
    with pytest.raises(DataError, match="format_version 99"):
        load_manifest(str(other))
