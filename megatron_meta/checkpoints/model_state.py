"""Read a checkpoint into a model built with either layer spec.

Transformer Engine modules save an ``_extra_state`` entry each (FP8 scaling metadata, empty in
bf16); megatron-core's local modules save none. A checkpoint written with the local spec (every
CPU run, every ``convert from-hf``) therefore lacks entries a TE-spec model requests, and
``dist_checkpointing.load`` fails on them. Those entries, and only those, are loaded as absent:
TE then keeps the defaults it was built with, which is what a fresh bf16 model has.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterable

import torch

from megatron_meta.errors import CheckpointError

logger = logging.getLogger(__name__)

EXTRA_STATE = "_extra_state"


def _only_extra_state(keys: Iterable[str]) -> list:
    return sorted(k for k in keys if EXTRA_STATE not in k)


def load_sharded(request: Dict[str, Any], path: str, where: str) -> Dict[str, Any]:
    """``dist_checkpointing.load(request, path)``, with requested ``_extra_state`` entries
    that ``path`` does not hold dropped; any other missing entry is a :class:`CheckpointError`."""
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.validation import StrictHandling

    state, _, unexpected = dist_checkpointing.load(
        request, path, strict=StrictHandling.RETURN_UNEXPECTED
    )
    others = _only_extra_state(unexpected)
    if others:
        shown = ", ".join(others[:3]) + (" ..." if len(others) > 3 else "")
        raise CheckpointError(
            f"{where}: {path} lacks {len(others)} tensors this model needs ({shown}); it was "
            "written by another model or program"
        )
    if unexpected:
        logger.info(
            "%s: %d Transformer Engine _extra_state entries are not in %s (written with the "
            "local layer spec): TE keeps its defaults", where, len(unexpected), path,
        )
    return state


def apply_model_state(model: torch.nn.Module, model_state: Dict[str, Any], where: str) -> None:
    """``model.load_state_dict(model_state)``, allowing only ``_extra_state`` keys to be absent."""
    result = model.load_state_dict(model_state, strict=False)
    missing = _only_extra_state(result.missing_keys)
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{where}: the checkpoint does not fit this model (missing {missing[:3]}, "
            f"unexpected {sorted(result.unexpected_keys)[:3]})"
        )
