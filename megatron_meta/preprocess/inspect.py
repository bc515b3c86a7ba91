"""``megatron-meta inspect PREFIX``: what a shard holds, and one document decoded.

Reads the shard with megatron-core's ``IndexedDataset`` (the reader training uses) and prints the
document, sequence and token counts, the token dtype, the metadata-token sidecar's totals and the
text of document ``--document N``, with the metadata tokens marked. The tokenizer comes from the
manifest that lists the shard (found next to it, or ``--manifest``) or from
``--tokenizer-type``/``--tokenizer-model``.
"""

from __future__ import annotations

import argparse
import glob
import os
import struct
import sys
from typing import List, Optional, Tuple

import numpy as np

from megatron_meta.errors import ConfigError, DataError
from megatron_meta.manifest import Manifest, load_manifest
from megatron_meta.preprocess.writer import SIDECAR_SUFFIX


def _strip_ext(prefix: str) -> str:
    for ext in (".bin", ".idx"):
        if prefix.endswith(ext):
            return prefix[: -len(ext)]
    return prefix


def find_manifest(prefix: str, explicit: Optional[str]) -> Optional[Manifest]:
    """The manifest listing ``prefix``: ``explicit``, else one in the shard's folder."""
    target = os.path.abspath(prefix)
    candidates = (
        [explicit]
        if explicit
        else sorted(glob.glob(os.path.join(os.path.dirname(target), "*.manifest.json")))
    )
    for path in candidates:
        manifest = load_manifest(path)
        if any(os.path.abspath(s.prefix) == target for s in manifest.shards):
            return manifest
    if explicit:
        raise ConfigError(f"--manifest {explicit} does not list the shard {prefix}")
    return None


def _open(prefix: str):
    for ext in (".bin", ".idx"):
        if not os.path.isfile(prefix + ext):
            raise DataError(
                f"{prefix}{ext}: not found; give the shard prefix (path without .bin/.idx)"
            )
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    try:
        return IndexedDataset(prefix)
    except (AssertionError, ValueError, OSError, struct.error, IndexError) as e:  # a cut .idx
        raise DataError(
            f"{prefix}: not a megatron-core indexed dataset, or truncated ({e})"
        ) from None


def document_tokens(dataset, n: int) -> Tuple[np.ndarray, List[int]]:
    """All ids of document ``n`` and the lengths of its sequences."""
    doc_idx = dataset.document_indices
    first, last = int(doc_idx[n]), int(doc_idx[n + 1])
    seqs = [dataset[i] for i in range(first, last)]
    return np.concatenate(seqs) if seqs else np.zeros(0, np.int32), [len(s) for s in seqs]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="megatron-meta inspect", description=__doc__.split("\n\n")[0])
    p.add_argument("prefix", help="shard path without .bin/.idx")
    p.add_argument("--document", type=int, default=0, metavar="N", help="document to decode")
    p.add_argument("--manifest", help="manifest listing the shard (default: search its folder)")
    p.add_argument("--tokenizer-type", help="decode with this tokenizer instead of the manifest's")
    p.add_argument("--tokenizer-model")
    p.add_argument("--max-chars", type=int, default=2000, help="print at most this much text")
    return p


def main(argv: List[str]) -> int:
    from megatron_meta.tokenizer import decode, load_tokenizer
    from megatron_meta.tokenizer.load import quiet_megatron_logs

    quiet_megatron_logs()
    args = build_parser().parse_args(argv)
    prefix = _strip_ext(args.prefix)
    dataset = _open(prefix)
    lengths = dataset.sequence_lengths
    documents = len(dataset.document_indices) - 1
    out = [
        f"shard: {os.path.abspath(prefix)}",
        f"documents: {documents}",
        f"sequences: {len(lengths)}",
        f"tokens: {int(lengths.sum())}",
        f"dtype: {np.dtype(dataset.index.dtype).name}",
    ]
    if len(lengths):
        out.append(
            f"sequence length: min {lengths.min()} mean {lengths.mean():.1f} max {lengths.max()}"
        )
    sidecar = None
    if os.path.isfile(prefix + SIDECAR_SUFFIX):
        sidecar = np.load(prefix + SIDECAR_SUFFIX)
        out.append(
            f"metadata tokens: {int(sidecar.sum())} "
            f"({sidecar.mean() if len(sidecar) else 0:.1f} per document)"
        )
    manifest = find_manifest(prefix, args.manifest)
    if manifest is not None:
        entry = next(
            s for s in manifest.shards if os.path.abspath(s.prefix) == os.path.abspath(prefix)
        )
        out.append(
            f"variant: {entry.variant}  region: {entry.region or '-'}  manifest: {manifest.path}"
        )
    print("\n".join(out))
    if args.tokenizer_type or args.tokenizer_model:
        if not (args.tokenizer_type and args.tokenizer_model):
            raise ConfigError("give both --tokenizer-type and --tokenizer-model")
        tokenizer = load_tokenizer(args.tokenizer_type, args.tokenizer_model)
    elif manifest is not None:
        tokenizer = load_tokenizer(manifest.tokenizer.type, manifest.tokenizer.model)
    else:
        print("(no manifest lists this shard: pass --tokenizer-type/--tokenizer-model to decode)")
        return 0
    if not 0 <= args.document < documents:
        raise ConfigError(f"--document {args.document}: the shard has documents 0..{documents - 1}")
    ids, seq_lengths = document_tokens(dataset, args.document)
    meta = int(sidecar[args.document]) if sidecar is not None else 0
    print(
        f"\n--- document {args.document}: {len(ids)} tokens in {len(seq_lengths)} sequence(s), "
        f"{meta} metadata tokens ---"
    )
    if meta:
        print(f"[metadata] {decode(tokenizer, ids[:meta])!r}")
    text = decode(tokenizer, ids[meta:])
    suffix = (
        f"... [{len(text) - args.max_chars} more characters]" if len(text) > args.max_chars else ""
    )
    sys.stdout.write(text[: args.max_chars] + suffix + "\n")
    return 0
