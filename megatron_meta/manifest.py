"""``{output-prefix}.manifest.json``: what a preprocessing run wrote, for training and evaluation.

A contract several stages read (preprocess and merge write it; training, conversion checks and
evaluation read it), so it lives below all of them, beside ``errors``.

Paths inside the manifest are relative to the manifest's folder so a data directory can be moved
or copied to a cluster as a whole. :func:`load_manifest` resolves them to absolute paths.

The manifest is written last, after every data file is in place, and records each shard file's
size and a checksum (:func:`fingerprint`); :func:`load_manifest` checks them, so a set switched
half-way from an earlier run to a new one (a ``.bin`` of one beside an ``.idx`` of the other), a
truncated file or a file copied incompletely is refused naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib
from typing import Any, Dict, List, Optional

from megatron_meta.errors import DataError

FORMAT_VERSION = 1
# Files up to this size are checksummed whole; larger ones by their first and last half of it plus
# their size, which catches truncation and a file of another run without reading gigabytes.
CHECKSUM_SPAN = 16 * 1024 * 1024


@dataclasses.dataclass
class TokenizerInfo:
    """The tokenizer the shards were written with."""

    type: str  # Megatron-LM --tokenizer-type name, e.g. "SentencePieceTokenizer"
    model: str  # --tokenizer-model path (absolute in a loaded manifest)
    vocab_size: int
    eod_id: int
    # Special tokens as the tokenizer defines them (None: it has none), so that conversion,
    # fine-tuning and evaluation can check they use the ids the shards were written with.
    bos_id: Optional[int] = None
    eos_id: Optional[int] = None
    pad_id: Optional[int] = None
    has_chat_template: bool = False


@dataclasses.dataclass
class ShardEntry:
    """One ``.bin/.idx`` pair: one metadata variant of one region (or of everything)."""

    prefix: str  # path without .bin/.idx
    variant: str
    region: Optional[str]
    documents: int
    tokens: int
    metadata_tokens: str  # .npy sidecar: int32, one count per document, in shard order
    # "bin", "idx", "metadata_tokens" -> {"bytes", "crc32"} (see fingerprint); None in manifests
    # written before checksums were recorded.
    files: Optional[Dict[str, Dict[str, int]]] = None

    def file_paths(self) -> Dict[str, str]:
        return {"bin": self.prefix + ".bin", "idx": self.prefix + ".idx",
                "metadata_tokens": self.metadata_tokens}


@dataclasses.dataclass
class HoldoutEntry:
    """A JSONL file of held-out documents (Document records, metadata included)."""

    path: str
    split: str  # "test" or "valid"
    region: Optional[str]
    documents: int = 0


@dataclasses.dataclass
class Manifest:
    tokenizer: TokenizerInfo
    shards: List[ShardEntry]
    holdout: List[HoldoutEntry]
    skipped: Dict[str, int]
    command: List[str]
    split_by: str = "none"
    url_form: str = "full"
    append_eod: bool = True
    # A BOS token before every document (--prepend-bos; the paper's protocol, used without EOD).
    prepend_bos: bool = False
    # One sequence per sentence (shards named *_text_sentence); GPTDataset would treat each
    # sentence as a document, so GPT training should use shards written without it.
    split_sentences: bool = False
    # Set on the output of one part of a --partitions run (index, count, document range,
    # settings merge compares); None on a whole run and on a merged output.
    partition: Optional[Dict[str, Any]] = None
    format_version: int = FORMAT_VERSION
    path: Optional[str] = None  # where it was loaded from; not serialized

    def variants(self) -> List[str]:
        return sorted({s.variant for s in self.shards})

    def regions(self) -> List[Optional[str]]:
        return sorted({s.region for s in self.shards}, key=lambda r: (r is None, r or ""))

    def shards_for(self, variant: str) -> List[ShardEntry]:
        return [s for s in self.shards if s.variant == variant]

    def to_json(self, base_dir: str) -> Dict[str, Any]:
        """Serializable dict with paths made relative to ``base_dir``."""

        def rel(p: str) -> str:
            return os.path.relpath(p, base_dir) if os.path.isabs(p) else p

        out = dataclasses.asdict(self)
        out.pop("path")
        if out["tokenizer"]["model"] and os.path.exists(out["tokenizer"]["model"]):
            out["tokenizer"]["model"] = rel(os.path.abspath(out["tokenizer"]["model"]))
        for s in out["shards"]:
            s["prefix"] = rel(s["prefix"])
            s["metadata_tokens"] = rel(s["metadata_tokens"])
        for h in out["holdout"]:
            h["path"] = rel(h["path"])
        return out


def fingerprint(path: str) -> Dict[str, int]:
    """``{"bytes": size, "crc32": checksum}`` of a file (sampled above CHECKSUM_SPAN, see there)."""
    size = os.path.getsize(path)
    crc = zlib.crc32(str(size).encode())
    half = CHECKSUM_SPAN // 2
    spans = [(0, size)] if size <= CHECKSUM_SPAN else [(0, half), (size - half, half)]
    with open(path, "rb") as f:
        for start, length in spans:
            f.seek(start)
            while length > 0:
                block = f.read(min(length, 1 << 20))
                if not block:
                    break
                crc = zlib.crc32(block, crc)
                length -= len(block)
    return {"bytes": size, "crc32": crc}


def check_shard_files(manifest_path: str, shard: ShardEntry) -> None:
    """Every file of ``shard`` exists and matches the size and checksum the manifest records."""
    for key, file in shard.file_paths().items():
        if key != "metadata_tokens" and not os.path.isfile(file):
            raise DataError(f"{manifest_path}: shard file {file} listed but missing")
    for key, recorded in (shard.files or {}).items():
        file = shard.file_paths()[key]
        if not os.path.isfile(file):
            raise DataError(f"{manifest_path}: shard file {file} listed but missing")
        found = fingerprint(file)
        if found["bytes"] != recorded.get("bytes"):
            problem = f"is {found['bytes']} bytes, the manifest says {recorded.get('bytes')}"
        elif found["crc32"] != recorded.get("crc32"):
            problem = "has another checksum than the manifest records"
        else:
            continue
        raise DataError(
            f"{file} {problem}: the file is truncated, damaged or from another run; re-run "
            f"preprocess (or copy the whole output set again) to get a consistent set"
        )


def write_manifest(manifest: Manifest, path: str) -> None:
    """Record each shard file's size and checksum, then write the manifest atomically (a temporary
    name, then rename, so a half-written manifest never exists). Called after the data files are
    in place, so the manifest is the last file of a set to appear."""
    for shard in manifest.shards:
        shard.files = {
            key: fingerprint(file) for key, file in shard.file_paths().items()
            if os.path.isfile(file)
        }
    base = os.path.dirname(os.path.abspath(path))
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest.to_json(base), f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def load_manifest(path: str) -> Manifest:
    """Read and validate a manifest; paths come back absolute."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: manifest not found; run `megatron-meta preprocess` to create it")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); the manifest is "
                        "damaged, re-run preprocess") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e}); the manifest is damaged, re-run preprocess")
    except OSError as e:
        raise DataError(f"{path}: cannot read the manifest ({e.strerror})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: a manifest is a JSON object, found a {type(raw).__name__}; "
                        "the file is damaged or not a manifest, re-run preprocess")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise DataError(
            f"{path}: manifest format_version {version!r}, this megatron-meta reads {FORMAT_VERSION}"
        )
    base = os.path.dirname(os.path.abspath(path))

    def absolute(p: str) -> str:
        return p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p))

    try:
        tok = TokenizerInfo(**raw["tokenizer"])
        if tok.model and not os.path.isabs(tok.model):
            tok.model = absolute(tok.model)
        shards = [ShardEntry(**s) for s in raw["shards"]]
        holdout = [HoldoutEntry(**h) for h in raw.get("holdout", [])]
    except (KeyError, TypeError, AttributeError) as e:
        raise DataError(f"{path}: missing or unexpected manifest field ({e}); re-run preprocess")
    for s in shards:
        s.prefix = absolute(s.prefix)
        s.metadata_tokens = absolute(s.metadata_tokens)
        check_shard_files(path, s)
    for h in holdout:
        h.path = absolute(h.path)
    return Manifest(
        tokenizer=tok,
        shards=shards,
        holdout=holdout,
        skipped=dict(raw.get("skipped", {})),
        command=list(raw.get("command", [])),
        split_by=raw.get("split_by", "none"),
        url_form=raw.get("url_form", "full"),
        append_eod=raw.get("append_eod", True),
        prepend_bos=raw.get("prepend_bos", False),
        split_sentences=raw.get("split_sentences", False),
        partition=raw.get("partition"),
        format_version=version,
        path=os.path.abspath(path),
    )
