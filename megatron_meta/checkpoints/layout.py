"""Where checkpoints are and what they say about their model (no tensors, no process group).

Layout of a ``--save`` folder (the names Megatron-LM users know)::

    latest_checkpointed_iteration.txt   the iteration of the newest complete checkpoint
    iter_0000100/                       one dist_checkpointing checkpoint
    config.yaml, metrics.jsonl          written by the trainer

Each ``iter_*`` folder also holds ``files.json`` (every file of the checkpoint and its size,
written before the folder gets its final name); readers check it first, so a truncated or deleted
tensor file is reported naming the file, and a resume can fall back to the newest complete earlier
checkpoint (:func:`newest_complete`).

The common (non-tensor) part of a checkpoint holds ``format_version``, ``iteration``, the model's
identity (every :class:`ModelPreset` field, so the model can be rebuilt without a registry entry,
and the tokenizer's vocabulary size), the run's resolved config and the tokenizer of its manifest.
A checkpoint converted from Hugging Face has no optimizer state (``weights_only``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Optional

from megatron_meta.errors import CheckpointError
from megatron_meta.models.presets import ModelPreset

TRACKER = "latest_checkpointed_iteration.txt"
FILES = "files.json"
FORMAT_VERSION = 1
# The fields that make two models interchangeable (the preset's name and source do not).
SHAPE_FIELDS = (
    "num_layers",
    "hidden_size",
    "num_attention_heads",
    "num_query_groups",
    "ffn_hidden_size",
    "tie_embeddings",
    "rotary_base",
    "rope_scaling",
    "norm_eps",
)


def iteration_dir(root: str, iteration: int) -> str:
    return os.path.join(root, f"iter_{iteration:07d}")


def _is_checkpoint(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "metadata.json"))


def latest_checkpoint(root: str) -> Optional[str]:
    """The newest complete checkpoint under a ``--save`` folder, or an ``iter_*`` folder itself."""
    if _is_checkpoint(root):
        return root
    tracker = os.path.join(root, TRACKER)
    if not os.path.isfile(tracker):
        return None
    with open(tracker, encoding="utf-8", errors="replace") as f:
        text = f.read().strip()
    try:
        path = iteration_dir(root, int(text))
    except ValueError:
        raise CheckpointError(f"{tracker}: expected an iteration number, found {text[:40]!r}")
    for candidate in (path, path + ".old"):  # .old: a crash while replacing the same iteration
        if _is_checkpoint(candidate):
            return candidate
    raise CheckpointError(
        f"{tracker} names iteration {text} but {path} is missing or incomplete"
        f"{_offer_earlier(path)}"
    )


def is_megatron_checkpoint(path: str) -> bool:
    """True for a ``--save`` folder or an ``iter_*`` folder holding a megatron-meta checkpoint."""
    if not os.path.isdir(path):
        return False
    try:
        found = latest_checkpoint(path)
        return found is not None and bool(read_common(found))
    except CheckpointError:
        return False


def record_files(path: str) -> None:
    """Write ``path/files.json``: every file under the checkpoint folder and its size."""
    files = {}
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            files[os.path.relpath(full, path)] = os.path.getsize(full)
    tmp = os.path.join(path, FILES + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"files": dict(sorted(files.items()))}, f, indent=1)
    os.replace(tmp, os.path.join(path, FILES))


def damage(path: str) -> Optional[str]:
    """What is wrong with the files of checkpoint ``path`` per its ``files.json`` (None: whole;
    also None for a checkpoint written before files were recorded)."""
    listing = os.path.join(path, FILES)
    if not os.path.exists(listing):
        return None
    try:
        with open(listing, encoding="utf-8") as f:
            files = json.load(f)["files"]
        files = {str(k): int(v) for k, v in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{listing} is damaged ({e!r})"
    for name, size in files.items():
        full = os.path.join(path, name)
        if not os.path.isfile(full):
            return f"{full} is missing"
        found = os.path.getsize(full)
        if found != size:
            return f"{full} is {found} bytes, {size} were written (truncated or damaged)"
    return None


def _iterations(root: str) -> Dict[int, str]:
    found = {}
    for name in os.listdir(root):
        m = re.fullmatch(r"iter_(\d{7})", name)
        if m and os.path.isdir(os.path.join(root, name)):
            found[int(m.group(1))] = os.path.join(root, name)
    return found


def newest_complete(root: str, before: Optional[int] = None) -> Optional[str]:
    """The newest ``iter_*`` folder of ``root`` (below iteration ``before``) that is whole."""
    for iteration, path in sorted(_iterations(root).items(), reverse=True):
        if before is not None and iteration >= before:
            continue
        if _is_checkpoint(path) and damage(path) is None:
            try:
                read_common(path)
            except CheckpointError:
                continue
            return path
    return None


def _offer_earlier(path: str) -> str:
    """A hint naming the newest complete checkpoint before the damaged ``path``, if any."""
    root, name = os.path.split(os.path.normpath(path))
    m = re.fullmatch(r"iter_(\d{7})(\.old)?", name)
    earlier = newest_complete(root, int(m.group(1))) if m and os.path.isdir(root) else None
    if earlier is None:
        return ""
    return (f"; the newest complete earlier checkpoint is {earlier}: give it to --load, or "
            "resume training with --load-fallback to take it")


def read_common(path: str) -> Dict[str, Any]:
    """The common state of one ``iter_*`` checkpoint; CheckpointError if it is not ours or is
    damaged (the message then names the file, and an earlier complete checkpoint if any)."""
    from megatron.core import dist_checkpointing

    problem = damage(path)
    if problem:
        raise CheckpointError(f"{path}: damaged checkpoint: {problem}{_offer_earlier(path)}")
    try:
        common = dist_checkpointing.load_common_state_dict(path)
    except Exception as e:  # megatron raises several types for a damaged folder
        raise CheckpointError(
            f"{path}: cannot read the checkpoint ({type(e).__name__}: {e}){_offer_earlier(path)}"
        ) from None
    if not isinstance(common, dict):
        raise CheckpointError(f"{path}: not a megatron-meta checkpoint (no common state)")
    if common.get("format_version") != FORMAT_VERSION or "model_identity" not in common:
        raise CheckpointError(
            f"{path}: not a megatron-meta checkpoint (format {common.get('format_version')!r})"
        )
    return common


# --------------------------------------------------------------------------------------------
# What a checkpoint says about its model


def model_identity(preset: ModelPreset, vocab_size: int) -> Dict[str, Any]:
    """The preset (all fields, so it can be rebuilt) and the tokenizer's vocabulary size."""
    return {"preset": dataclasses.asdict(preset), "vocab_size": int(vocab_size)}


def preset_of(identity: Dict[str, Any]) -> ModelPreset:
    """The :class:`ModelPreset` recorded in a checkpoint (fields added since default)."""
    known = {f.name for f in dataclasses.fields(ModelPreset)}
    return ModelPreset(**{k: v for k, v in identity["preset"].items() if k in known})


def check_identity(saved: Dict[str, Any], current: Dict[str, Any], where: str) -> None:
    """Raise CheckpointError if the checkpoint's model is not the one being trained."""
    s_preset, c_preset = saved["preset"], current["preset"]
    diffs = [
        f"{k} {s_preset.get(k)} vs {c_preset.get(k)}"
        for k in SHAPE_FIELDS
        if k in s_preset and s_preset.get(k) != c_preset.get(k)
    ]
    if saved["vocab_size"] != current["vocab_size"]:
        diffs.append(f"vocabulary {saved['vocab_size']} vs {current['vocab_size']}")
    if diffs:
        raise CheckpointError(
            f"{where} holds a checkpoint of model {s_preset['name']!r}, not of --model "
            f"{c_preset['name']!r} ({'; '.join(diffs)}); use --model {s_preset['name']} with this "
            "checkpoint (or leave --model out with --finetune), or --load another folder"
        )


@dataclass
class CheckpointInfo:
    """What a checkpoint says about its model (for evaluation, conversion and fine-tuning)."""

    path: str
    """The ``iter_*`` folder."""
    iteration: int
    """Training iteration it was saved at (0 for a converted model)."""
    preset: ModelPreset
    """The model's shape (rebuilt from the checkpoint, no registry entry needed)."""
    vocab_size: int
    """The tokenizer's vocabulary size (before padding)."""
    seq_length: int
    """Sequence length it was trained with."""
    tokenizer: Optional[Dict[str, Any]]
    """The tokenizer entry of its manifest (type, model, vocab_size, eod_id)."""
    config: Dict[str, Any]
    """The run's resolved config (sections as dicts)."""
    weights_only: bool
    """No optimizer state (converted from Hugging Face): usable with --finetune, not to resume."""
    common: Dict[str, Any]
    """The whole common state."""


def find_checkpoint(checkpoint_dir: Optional[str]) -> Optional[str]:
    """The newest complete checkpoint of a --save folder (or the iter_* folder given), or None."""
    return latest_checkpoint(checkpoint_dir) if checkpoint_dir and os.path.isdir(checkpoint_dir) else None


def require_checkpoint(checkpoint_dir: str, where: str) -> str:
    """:func:`find_checkpoint`, or an error naming ``where`` (the flag or path) and the fix."""
    path = find_checkpoint(checkpoint_dir)
    if path is None:
        raise CheckpointError(
            f"{where}: no checkpoint there; give a --save folder of `megatron-meta train` or "
            "`megatron-meta convert from-hf`, or one of its iter_* folders"
        )
    return path


def checkpoint_info(checkpoint_dir: str) -> CheckpointInfo:
    """Read a checkpoint's description without loading tensors (no process group needed)."""
    path = require_checkpoint(checkpoint_dir, checkpoint_dir)
    common = read_common(path)
    identity = common["model_identity"]
    return CheckpointInfo(
        path=path,
        iteration=int(common["iteration"]),
        preset=preset_of(identity),
        vocab_size=int(identity["vocab_size"]),
        seq_length=int(common["config"]["model"]["seq_length"]),
        tokenizer=common.get("tokenizer"),
        config=common["config"],
        weights_only=bool(common.get("weights_only", False)),
        common=common,
    )
