"""Fixtures for the training tests: crafted shards, a manifest, and CLI runs.

The shards are written with megatron-core's ``IndexedDatasetBuilder``, like preprocessing does,
from token ids chosen so that a test can tell from an id alone what it is:

* metadata tokens of region ``r``: ``META_BASE + 10 * r + k``;
* body tokens of region ``r``: ``BODY_BASE + BODY_SPAN * r + k``;
* every document ends with ``EOD``.

Variant ``full`` documents are ``metadata + body + [EOD]`` with a sidecar counting the metadata,
variant ``none`` the same documents as ``body + [EOD]`` (sidecar zeros).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

VOCAB = 1000
EOD = 1
BODY_BASE, BODY_SPAN = 100, 200
META_BASE = 900
REGIONS = ("Africa", "Asia", "Europe")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def region_of_token(token: int) -> Optional[int]:
    """Region index a token id belongs to (None for EOD / padding)."""
    if token >= META_BASE:
        return (token - META_BASE) // 10
    if token >= BODY_BASE:
        return (token - BODY_BASE) // BODY_SPAN
    return None


def is_metadata_token(token: int) -> bool:
    return token >= META_BASE


def make_documents(region_index: int, count: int, seed: int) -> List[Dict[str, List[int]]]:
    """``count`` documents of a region: {'meta': ids, 'body': ids}."""
    rng = np.random.default_rng(seed + 97 * region_index)
    docs = []
    for _ in range(count):
        meta = (META_BASE + 10 * region_index + rng.integers(0, 10, rng.integers(3, 7))).tolist()
        # Bodies with structure (a repeated motif) so that a tiny model's loss falls quickly.
        motif = (BODY_BASE + BODY_SPAN * region_index + rng.integers(0, 20, 6)).tolist()
        length = int(rng.integers(20, 60))
        body = (motif * (length // len(motif) + 1))[:length]
        docs.append({"meta": meta, "body": body})
    return docs


def write_shard(prefix: str, documents: Sequence[List[int]], meta_counts: Sequence[int]) -> str:
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for ids in documents:
        builder.add_document(torch.tensor(ids, dtype=torch.int64), [len(ids)])
    builder.finalize(prefix + ".idx")
    sidecar = prefix + ".metadata_tokens.npy"
    np.save(sidecar, np.asarray(meta_counts, dtype=np.int32))
    return sidecar


def write_corpus(
    folder: str,
    docs_per_region: int = 40,
    regions: Sequence[str] = REGIONS,
    variants: Sequence[str] = ("full", "none"),
    seed: int = 0,
) -> str:
    """Shards per region and variant plus a manifest; returns the manifest path."""
    from megatron_meta.manifest import (
        Manifest,
        ShardEntry,
        TokenizerInfo,
        write_manifest,
    )

    os.makedirs(folder, exist_ok=True)
    shards = []
    for r, region in enumerate(regions):
        docs = make_documents(r, docs_per_region, seed)
        for variant in variants:
            with_meta = variant != "none"
            ids = [(d["meta"] if with_meta else []) + d["body"] + [EOD] for d in docs]
            counts = [len(d["meta"]) if with_meta else 0 for d in docs]
            prefix = os.path.join(folder, f"corpus_{variant}_{region}")
            sidecar = write_shard(prefix, ids, counts)
            shards.append(
                ShardEntry(
                    prefix=prefix,
                    variant=variant,
                    region=region,
                    documents=len(ids),
                    tokens=sum(map(len, ids)),
                    metadata_tokens=sidecar,
                )
            )
    manifest = Manifest(
        tokenizer=TokenizerInfo(type="NullTokenizer", model="", vocab_size=VOCAB, eod_id=EOD),
        shards=shards,
        holdout=[],
        skipped={},
        command=["tests"],
        split_by="continent",
    )
    path = os.path.join(folder, "corpus.manifest.json")
    write_manifest(manifest, path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_args(manifest: str, **overrides) -> List[str]:
    """Flags of a small, quick run of the `tiny` preset on the crafted corpus."""
    values = {
        "--model": "tiny",
        "--data-manifest": manifest,
        "--variant": "full",
        "--seq-length": 32,
        "--micro-batch-size": 2,
        "--global-batch-size": 8,
        "--train-iters": 6,
        "--lr": 3e-3,
        "--min-lr": 3e-4,
        "--lr-warmup-iters": 2,
        "--log-interval": 1,
        "--eval-iters": 1,
        "--num-workers": 0,
        "--seed": 7,
    }
    values.update(overrides)
    args: List[str] = []
    for flag, value in values.items():
        if value is None:
            continue
        if value is True:
            args.append(flag)
        else:
            args += [flag, str(value)]
    return args


def run_cli(
    args: List[str], nproc: int = 1, timeout: int = 300, env_extra=None
) -> subprocess.CompletedProcess:
    """``megatron-meta train ARGS`` as a real subprocess (torchrun when ``nproc`` > 1)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    env.update(env_extra or {})
    if nproc == 1:
        cmd = [sys.executable, "-m", "megatron_meta.cli", "train", *args]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(nproc),
            "--master-port",
            str(free_port()),
            "-m",
            "megatron_meta.cli",
            "train",
            *args,
        ]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def read_metrics(save_dir: str) -> List[dict]:
    with open(os.path.join(save_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def losses_by_iteration(save_dir: str) -> Dict[int, float]:
    return {r["iteration"]: r["loss"] for r in read_metrics(save_dir)}
