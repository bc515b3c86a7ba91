"""Checkpoints as a contract between stages: the folder layout, what a checkpoint records about
its model, reading its weights, and writing one atomically.

Training writes checkpoints; conversion, evaluation and fine-tuning read them. This package sits
above ``models`` (a checkpoint records a model's shape as a :class:`ModelPreset`) and below
``training``, ``convert`` and ``evaluation``, so each of those imports it downward.
"""

from megatron_meta.checkpoints.layout import (
    FORMAT_VERSION,
    TRACKER,
    CheckpointInfo,
    check_identity,
    checkpoint_info,
    is_megatron_checkpoint,
    iteration_dir,
    latest_checkpoint,
    model_identity,
    read_common,
)

__all__ = [
    "FORMAT_VERSION",
    "TRACKER",
    "CheckpointInfo",
    "check_identity",
    "checkpoint_info",
    "is_megatron_checkpoint",
    "iteration_dir",
    "latest_checkpoint",
    "model_identity",
    "read_common",
]
