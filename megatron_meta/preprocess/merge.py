"""``megatron-meta merge`` (also ``tools/merge_datasets.py``): join the parts of a partitioned run.

::

    megatron-meta preprocess ... --partitions 3 --partition-index 0 --output-prefix parts/p0  # x3
    megatron-meta merge --input parts/p0.manifest.json parts/p1.manifest.json \\
        parts/p2.manifest.json --output-prefix data/news

Parts are contiguous ranges of the corpus (:mod:`~megatron_meta.preprocess.partition`), so joining
them in part order gives byte for byte what one run over the corpus writes: each shard appended
with :meth:`~megatron_meta.preprocess.writer.ShardWriter.append_shard` (the join the workers'
pieces go through: index arrays read through a memory map in blocks, so memory stays flat however
many documents the parts hold), the held-out JSONL concatenated, skipped-record counts added, and
one manifest listing it all. The parts may be given
in any order. Refused, with the difference named: parts of different runs (tokenizer, variants,
region split, URL form, EOD, sentences, seed, held-out settings, inputs or partition count), a
missing or repeated part, and a part whose files are missing.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import shutil
import sys
from typing import Dict, List, Optional, Tuple

from megatron_meta.errors import ConfigError, DataError
from megatron_meta.manifest import (
    HoldoutEntry,
    Manifest,
    ShardEntry,
    load_manifest,
    write_manifest,
)
from megatron_meta.outputs import check_output, disk_full_guard
from megatron_meta.preprocess.runner import holdout_path, shard_prefix
from megatron_meta.preprocess.writer import ShardWriter, token_dtype

logger = logging.getLogger(__name__)

# What every part of one run must share: (description, how to read it from a manifest).
_SAME = (
    ("tokenizer type", lambda m: m.tokenizer.type),
    ("tokenizer vocabulary size", lambda m: m.tokenizer.vocab_size),
    ("tokenizer EOD id", lambda m: m.tokenizer.eod_id),
    ("tokenizer file contents (sha256)", lambda m: m.partition["tokenizer_sha256"]),
    ("--metadata-variants", lambda m: m.partition["variants"]),
    ("--split-by", lambda m: m.split_by),
    ("--url-form", lambda m: m.url_form),
    ("--append-eod", lambda m: m.append_eod),
    ("--prepend-bos", lambda m: m.prepend_bos),
    ("--split-sentences", lambda m: m.split_sentences),
    ("--seed", lambda m: m.partition["seed"]),
    ("--holdout-test", lambda m: m.partition["holdout_test"]),
    ("--holdout-valid-fraction", lambda m: m.partition["holdout_valid_fraction"]),
    ("--input (names and sizes)", lambda m: m.partition["inputs"]),
    ("--partitions", lambda m: m.partition["count"]),
    ("corpus document count", lambda m: m.partition["total_documents"]),
)


def check_parts(parts: List[Manifest]) -> List[Manifest]:
    """The parts in part order; DataError naming the first difference or the missing part."""
    if not parts:
        raise ConfigError("--input: give the manifests of all parts")
    for m in parts:
        if m.partition is None:
            raise DataError(
                f"{m.path}: not a part of a partitioned run (written without --partitions)"
            )
    first = parts[0]
    for m in parts[1:]:
        for what, read in _SAME:
            if read(m) != read(first):
                raise DataError(
                    f"{m.path} and {first.path} were made with different {what}: "
                    f"{read(m)!r} vs {read(first)!r}; re-run the parts with the same settings"
                )
    by_index: Dict[int, Manifest] = {}
    for m in parts:
        index = m.partition["index"]
        if index in by_index:
            raise DataError(f"part {index} given twice: {by_index[index].path} and {m.path}")
        by_index[index] = m
    count = first.partition["count"]
    missing = [i for i in range(count) if i not in by_index]
    if missing:
        raise DataError(
            f"part(s) {', '.join(map(str, missing))} of {count} missing from --input; "
            "a missing part would silently drop documents, so nothing was written"
        )
    return [by_index[i] for i in range(count)]


def _tmp(path: str) -> str:
    return f"{path}.tmp-{os.getpid()}"


def merge_parts(
    manifest_paths: List[str], output_prefix: str, command: Optional[List[str]] = None
) -> Manifest:
    """Join parts into one output set at ``output_prefix``; returns the written manifest."""
    parts = check_parts([load_manifest(p) for p in manifest_paths])
    first = parts[0]
    variants: List[str] = first.partition["variants"]
    dtype = token_dtype(first.tokenizer.vocab_size)
    shards: Dict[Tuple[str, Optional[str]], List[ShardEntry]] = collections.defaultdict(list)
    holdouts: Dict[Tuple[str, Optional[str]], List[HoldoutEntry]] = collections.defaultdict(list)
    for m in parts:
        for s in m.shards:
            shards[(s.variant, s.region)].append(s)
        for h in m.holdout:
            holdouts[(h.split, h.region)].append(h)
    out_dir = os.path.dirname(os.path.abspath(output_prefix))
    os.makedirs(out_dir, exist_ok=True)
    manifest_path = output_prefix + ".manifest.json"
    renames: List[Tuple[str, str]] = []
    writers: List[ShardWriter] = []
    try:
        merged_shards = []
        order = {v: i for i, v in enumerate(variants)}
        for (variant, region), entries in sorted(
            shards.items(), key=lambda kv: (order[kv[0][0]], kv[0][1] or "")
        ):
            prefix = os.path.abspath(
                shard_prefix(output_prefix, variant, region, first.split_sentences)
            )
            writer = ShardWriter(prefix, dtype)
            writers.append(writer)
            for e in entries:
                writer.append_shard(e.prefix, e.metadata_tokens)
            renames.extend(writer.finalize())
            sidecar = writer.sidecar
            merged_shards.append(
                ShardEntry(
                    prefix=prefix,
                    variant=variant,
                    region=region,
                    documents=sum(e.documents for e in entries),
                    tokens=sum(e.tokens for e in entries),
                    metadata_tokens=sidecar,
                )
            )
        merged_holdout = []
        for (split, region), entries in sorted(
            holdouts.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")
        ):
            path = os.path.abspath(holdout_path(output_prefix, split, region))
            renames.append((_tmp(path), path))
            with open(_tmp(path), "wb") as out:
                for e in entries:
                    with open(e.path, "rb") as f:
                        shutil.copyfileobj(f, out)
            merged_holdout.append(
                HoldoutEntry(
                    path=path, split=split, region=region, documents=sum(e.documents for e in entries)
                )
            )
        skipped: Dict[str, int] = collections.Counter()
        for m in parts:
            skipped.update(m.skipped)
        manifest = Manifest(
            tokenizer=first.tokenizer,
            shards=merged_shards,
            holdout=merged_holdout,
            skipped=dict(sorted(skipped.items())),
            command=list(command or []),
            split_by=first.split_by,
            url_form=first.url_form,
            append_eod=first.append_eod,
            prepend_bos=first.prepend_bos,
            split_sentences=first.split_sentences,
        )
        if not merged_shards:
            raise DataError("the parts hold no training documents; nothing to merge")
        if os.path.exists(manifest_path):  # must not describe the files being replaced
            os.remove(manifest_path)
        for tmp, final in renames:
            os.replace(tmp, final)
        write_manifest(manifest, manifest_path)
    except BaseException:
        for writer in writers:
            writer.close()
            renames.extend((tmp, "") for tmp in writer.temp_paths())
        for tmp, _ in renames:
            if os.path.exists(tmp):
                os.remove(tmp)
        raise
    return manifest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="megatron-meta merge",
        description="Join the outputs of `preprocess --partitions N --partition-index I` runs "
        "into one output set, byte-identical to a single run over the whole corpus.",
    )
    parser.add_argument(
        "--input", nargs="+", required=True, metavar="MANIFEST",
        help="the parts' {prefix}.manifest.json files, all N of them (any order)",
    )  # fmt: skip
    parser.add_argument("--output-prefix", required=True, help="path prefix of the merged output")
    return parser


def main(argv: List[str]) -> int:
    from megatron_meta.tokenizer.load import quiet_megatron_logs

    quiet_megatron_logs()
    args = build_parser().parse_args(argv)
    check_output(args.output_prefix, "--output-prefix", kind="prefix")
    with disk_full_guard(args.output_prefix, lambda: []):  # merge_parts removes its temporaries
        manifest = merge_parts(args.input, args.output_prefix, ["megatron-meta", "merge"] + argv)
    lines = [f"merged {len(args.input)} part(s) into {len(manifest.shards)} shard(s)"]
    for s in manifest.shards:
        lines.append(
            f"  {s.variant:<15} {s.region or '-':<10} {s.documents:>9} docs "
            f"{s.tokens:>12} tokens  {s.prefix}"
        )
    for h in manifest.holdout:
        lines.append(f"  {h.split:<15} {h.region or '-':<10} {h.documents:>9} docs  {h.path}")
    lines.append(f"manifest: {args.output_prefix}.manifest.json")
    print("\n".join(lines), file=sys.stdout)
    return 0
