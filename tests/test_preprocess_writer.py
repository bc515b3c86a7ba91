"""The streaming shard writer against megatron-core's IndexedDatasetBuilder; the holdout rule."""

import filecmp
import os

import numpy as np
import pytest
import torch

from megatron_meta.preprocess.holdout import HoldoutConfig, HoldoutSelector, document_key
from megatron_meta.preprocess.pipeline import EncodedVariant
from megatron_meta.preprocess.writer import OutputSet, ShardWriter, token_dtype


def _random_documents(rng, n, vocab, max_sequences):
    docs = []
    for _ in range(n):
        seqs = [
            rng.integers(0, vocab, size=rng.integers(1, 40))
            for _ in range(rng.integers(1, max_sequences + 1))
        ]
        docs.append(seqs)
    return docs


def _chunk(docs, dtype):
    seqs = [s for d in docs for s in d]
    return EncodedVariant(
        tokens=np.concatenate(seqs).astype(dtype),
        sequence_lengths=np.asarray([len(s) for s in seqs], np.int32),
        document_sequences=np.asarray([len(d) for d in docs], np.int32),
        metadata_tokens=np.asarray([len(d[0]) // 2 for d in docs], np.int32),
    )


@pytest.mark.parametrize("vocab,max_sequences", [(1000, 1), (70000, 1), (1000, 4)])
def test_writer_matches_indexed_dataset_builder_bytes(tmp_path, vocab, max_sequences, monkeypatch):
    from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

    import megatron_meta.preprocess.writer as writer_module

    monkeypatch.setattr(writer_module, "_BLOCK", 7)  # exercise block-wise index assembly
    rng = np.random.default_rng(0)
    docs = _random_documents(rng, 50, vocab, max_sequences)
    dtype = token_dtype(vocab)
    assert dtype == (np.uint16 if vocab < 65500 else np.int32)

    ours = ShardWriter(str(tmp_path / "ours"), dtype)
    for start in range(0, len(docs), 9):  # several chunks
        ours.add(_chunk(docs[start : start + 9], dtype))
    for tmp, final in ours.finalize():
        os.replace(tmp, final)

    ref = IndexedDatasetBuilder(str(tmp_path / "ref.bin"), dtype=dtype.type)
    for d in docs:
        ref.add_document(torch.from_numpy(np.concatenate(d)), [len(s) for s in d])
    ref.finalize(str(tmp_path / "ref.idx"))

    for ext in (".bin", ".idx"):
        assert filecmp.cmp(tmp_path / f"ours{ext}", tmp_path / f"ref{ext}", shallow=False)
    ds = IndexedDataset(str(tmp_path / "ours"))
    flat = [s for d in docs for s in d]
    assert len(ds) == len(flat) and all(np.array_equal(ds[i], flat[i]) for i in range(len(flat)))
    side = np.load(tmp_path / "ours.metadata_tokens.npy")
    assert side.tolist() == [len(d[0]) // 2 for d in docs]
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["ours.bin", "ours.idx", "ours.metadata_tokens.npy", "ref.bin", "ref.idx"]
    )


def test_output_set_abort_and_commit(tmp_path):
    manifest = tmp_path / "out.manifest.json"
    manifest.write_text("{}")  # stale manifest of an earlier run
    outputs = OutputSet(str(manifest))
    w = outputs.shard(("full", None), str(tmp_path / "s"), np.dtype(np.uint16))
    w.add(_chunk([[np.arange(5)]], np.uint16))
    assert all(".tmp-" in p for p in os.listdir(tmp_path) if p != manifest.name)
    outputs.abort()
    assert os.listdir(tmp_path) == [manifest.name]

    outputs = OutputSet(str(manifest))
    outputs.shard(("full", None), str(tmp_path / "s"), np.dtype(np.uint16)).add(
        _chunk([[np.arange(5)]], np.uint16)
    )

    def fail():
        assert not manifest.exists()  # the stale manifest is gone before new files appear
        manifest.write_text("new")

    outputs.commit(fail)
    assert sorted(os.listdir(tmp_path)) == [
        "out.manifest.json",
        "s.bin",
        "s.idx",
        "s.metadata_tokens.npy",
    ]


def test_holdout_selector_exact_and_deterministic():
    stream = [(i, ["a", "b"][i % 2], f"id{i}") for i in range(200)]
    picks = []
    for _ in range(2):
        sel = HoldoutSelector(HoldoutConfig(test_per_region=5, valid_fraction=0.1, seed=9))
        sel.scan(iter(stream))
        picks.append([sel.assign(p, d) for p, _, d in stream])
    assert picks[0] == picks[1]
    tests = [stream[i] for i, s in enumerate(picks[0]) if s == "test"]
    assert sorted(r for _, r, _ in tests) == ["a"] * 5 + ["b"] * 5
    # exactly the 5 smallest keys of each region
    for region in "ab":
        keys = sorted((document_key(9, "test", d), p) for p, r, d in stream if r == region)
        assert {p for _, p in keys[:5]} == {p for p, r, _ in tests if r == region}
    valid = picks[0].count("valid")
    assert 5 <= valid <= 40  # 10% of 190 in expectation


def test_holdout_duplicate_ids_are_counted_exactly():
    stream = [(i, None, "same") for i in range(10)]
    sel = HoldoutSelector(HoldoutConfig(test_per_region=3, seed=1))
    sel.scan(iter(stream))
    assert [sel.assign(p, d) for p, _, d in stream].count("test") == 3


def test_holdout_config_validation():
    from megatron_meta.errors import ConfigError

    with pytest.raises(ConfigError, match="--holdout-valid-fraction"):
        HoldoutSelector(HoldoutConfig(valid_fraction=1.5))
    with pytest.raises(ConfigError, match="--holdout-test"):
        HoldoutSelector(HoldoutConfig(test_per_region=-1))
