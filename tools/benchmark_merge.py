#!/usr/bin/env python
"""Merge two synthetic parts of N one-token documents each; time and peak RSS of the merge.

``python tools/benchmark_merge.py DIR 50000000`` (100M documents, about 2.6 GB written to DIR).
"""
import os, resource, sys, time
import numpy as np
from megatron_meta.manifest import Manifest, ShardEntry, TokenizerInfo, write_manifest
from megatron_meta.preprocess.merge import merge_parts
from megatron_meta.preprocess.writer import ShardWriter
from megatron_meta.preprocess.pipeline import EncodedVariant

root = sys.argv[1]; per_part = int(sys.argv[2])
os.makedirs(root, exist_ok=True)
paths = []
block = 1 << 22
for i in range(2):
    prefix = f"{root}/p{i}_full_text_document"
    if not os.path.exists(prefix + ".idx"):
        w = ShardWriter(prefix, np.uint16)
        for lo in range(0, per_part, block):
            n = min(block, per_part - lo)
            ones = np.ones(n, dtype=np.int32)
            w.add(EncodedVariant((np.arange(n) % 1000).astype(np.uint16), ones, ones, np.zeros(n, np.int32)))
        for tmp, final in w.finalize():
            os.replace(tmp, final)
    part = {"index": i, "count": 2, "first_document": i * per_part, "end_document": (i + 1) * per_part,
            "total_documents": 2 * per_part, "variants": ["full"], "seed": 1, "holdout_test": 0,
            "holdout_valid_fraction": 0.0, "inputs": [["x", 1]], "tokenizer_sha256": "s"}
    m = Manifest(TokenizerInfo("SentencePieceTokenizer", "tok.model", 32000, 2), [ShardEntry(prefix, "full", None, per_part, per_part, prefix + ".metadata_tokens.npy")], [], {}, [], partition=part)
    write_manifest(m, f"{root}/p{i}.manifest.json"); paths.append(f"{root}/p{i}.manifest.json")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter(); c = time.process_time()
merge_parts(paths, f"{root}/merged")
print(f"merged {2*per_part} documents in {time.perf_counter()-t:.1f} s ({time.process_time()-c:.1f} CPU-s); "
      f"peak RSS before merge {before:.0f} MB, after {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024:.0f} MB")
from megatron.core.datasets.indexed_dataset import IndexedDataset
ds = IndexedDataset(f"{root}/merged_full_text_document")
print("check", len(ds), ds.document_indices[-1], ds[per_part + 3].tolist())
