"""Where a run's weights come from: random (a fresh run), a resumed checkpoint (``--load``), or
the weights alone of a pretrained checkpoint (``--load X --finetune``, ``--pretrained-checkpoint
X``) for a new run with a fresh optimizer, schedule and data position.

The model's shape comes from ``--model`` or, when that is left out, from the checkpoint the run
starts from (a checkpoint records every shape field, so a model converted from Hugging Face needs
no preset). ``--pretrained-checkpoint`` follows Megatron-LM: it is used only while ``--load`` has
no checkpoint, so a requeued job with ``--save X --load X`` resumes its own progress instead.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional

from megatron_meta.checkpoints.layout import (
    CheckpointInfo,
    checkpoint_info,
    find_checkpoint,
    newest_complete,
    read_common,
    require_checkpoint,
)
from megatron_meta.errors import CheckpointError, ConfigError
from megatron_meta.models.presets import ModelPreset, get_preset
from megatron_meta.manifest import Manifest
from megatron_meta.training.config import RunConfig

DEFAULT_PRESET = "tiny"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StartingPoint:
    """The model to build and what to load into it."""

    preset: ModelPreset
    """Shape of the model (from --model or the checkpoint)."""
    mode: str
    """``fresh`` (random weights), ``resume`` (--load: everything) or ``weights`` (weights only)."""
    path: Optional[str] = None
    """The folder given to --load / --pretrained-checkpoint (None when fresh)."""
    flag: str = ""
    """The flag that named ``path``, for messages."""


def starting_point(config: RunConfig) -> StartingPoint:
    """Decide, from the flags and what exists on disk, how the run starts (no tensors read)."""
    c = config.checkpoint
    if c.finetune and not c.load:
        raise ConfigError("--finetune loads the weights of --load CKPT: give --load")
    if c.finetune and c.pretrained_checkpoint:
        raise ConfigError(
            "--finetune and --pretrained-checkpoint both name the starting weights: use one "
            "(--pretrained-checkpoint X lets a requeued job resume from --load)"
        )
    if c.finetune:
        mode, path, flag = "weights", c.load, f"--load {c.load} --finetune"
        require_checkpoint(c.load, flag)
    elif find_checkpoint(c.load) is not None:
        mode, path, flag = "resume", c.load, f"--load {c.load}"
    elif c.pretrained_checkpoint:
        mode, path = "weights", c.pretrained_checkpoint
        flag = f"--pretrained-checkpoint {path}"
        require_checkpoint(path, flag)
    else:
        name = config.model.preset or DEFAULT_PRESET
        return StartingPoint(get_preset(name), "fresh")
    info = checkpoint_info(path)
    preset = get_preset(config.model.preset) if config.model.preset else info.preset
    return StartingPoint(preset, mode, path, flag)


def fall_back_if_damaged(config: RunConfig) -> None:
    """``--load-fallback``: point ``--load`` at the newest complete checkpoint when the newest one
    of ``--load`` (or ``--save``) is damaged. Without the flag the damage stops the run with a
    message naming the file and the earlier checkpoint (:func:`read_common`)."""
    c = config.checkpoint
    root = c.load or c.save
    if not c.load_fallback or c.finetune or not root or not os.path.isdir(root):
        return
    try:
        newest = find_checkpoint(root)
        if newest is None:
            return
        read_common(newest)
        return  # whole
    except CheckpointError as e:
        problem = str(e)
    earlier = newest_complete(root)
    if earlier is None:
        raise CheckpointError(
            f"{problem}; --load-fallback: no complete earlier checkpoint in {root}"
        )
    damaged = problem.split("; the newest")[0]
    logger.warning("%s; --load-fallback: resuming from %s", damaged, earlier)
    c.load = earlier


def check_tokenizer(info: CheckpointInfo, manifest: Manifest, flag: str) -> None:
    """Refuse shards written with another tokenizer than the checkpoint's model was trained on."""
    ours = manifest.tokenizer
    problems = []
    if info.vocab_size != ours.vocab_size:
        problems.append(f"vocabulary {info.vocab_size} vs {ours.vocab_size}")
    saved = info.tokenizer or {}
    if saved.get("eod_id") is not None and int(saved["eod_id"]) != int(ours.eod_id):
        problems.append(f"end-of-document id {saved['eod_id']} vs {ours.eod_id}")
    if saved.get("type") and saved["type"] != ours.type:
        problems.append(f"tokenizer type {saved['type']} vs {ours.type}")
    if problems:
        model = saved.get("model") or "the checkpoint's tokenizer"
        raise CheckpointError(
            f"{flag}: the checkpoint's tokenizer does not match the shards of --data-manifest "
            f"{manifest.path} ({'; '.join(problems)}); preprocess with --tokenizer-type "
            f"{saved.get('type', 'TYPE')} --tokenizer-model {model}"
        )
