"""Training checkpoints: save and resume (model, optimizer, RNG, data position), and load the
weights alone to start a new run from them (``--finetune``, ``--pretrained-checkpoint``).

The folder layout, the model identity and crash-safe writing are shared with conversion and
evaluation in :mod:`megatron_meta.checkpoints`. A training checkpoint holds the model and
optimizer as sharded tensors (so a TP=2 checkpoint loads at TP=1), each rank's RNG states, and
in its common part the iteration, the consumed samples, the model's shape and vocabulary (a
checkpoint of another model is refused with a :class:`CheckpointError`) and the resolved config.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.distributed as dist

from megatron_meta.checkpoints.layout import (  # noqa: F401  (re-used by the trainer)
    TRACKER,
    FORMAT_VERSION,
    check_identity,
    find_checkpoint,
    iteration_dir,
    latest_checkpoint,
    model_identity,
    read_common,
    require_checkpoint,
)
from megatron_meta.checkpoints.model_state import apply_model_state, load_sharded
from megatron_meta.checkpoints.write import save_state
from megatron_meta.errors import CheckpointError
from megatron_meta.training.optimizer import optimizer_kind

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# RNG states


def rng_state() -> Dict[str, Any]:
    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    return {
        "random": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "tracker": get_cuda_rng_tracker().get_states(),
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    get_cuda_rng_tracker().set_states(state["tracker"])


def _rng_sharded_object(world_size: int, rank: int):
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    return ShardedObject("rng_state", rng_state(), (world_size,), (rank,), replica_id=0)


# --------------------------------------------------------------------------------------------
# Save


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


# How megatron-core's distributed optimizer lays out its state (Megatron-LM passes the same
# keys). Without them 0.16.1 defaults to 'fully_sharded_model_space', whose flattened
# ShardedTensors its own ShardedTensor refuses; 'fully_reshardable' is saved in the model's
# tensor shapes, so it loads at another TP and DP size ('dp_reshardable' would tie the checkpoint
# to its TP size). Memory-efficient: the state is gathered over gloo into data-parallel rank 0's
# host memory, not all-gathered into every GPU (12 bytes a parameter on each).
OPTIMIZER_METADATA = {
    "distrib_optim_sharding_type": "fully_reshardable",
    "distrib_optim_fully_reshardable_mem_efficient": True,
}


def optimizer_sharded_state(optimizer: Any, model_sd: Dict, is_loading: bool) -> Dict:
    """The optimizer's part of a checkpoint request (any of our optimizers)."""
    return optimizer.sharded_state_dict(
        model_sd, is_loading=is_loading, metadata=dict(OPTIMIZER_METADATA)
    )


def save_checkpoint(
    root: str, iteration: int, model: torch.nn.Module, optimizer: Any, common: Dict[str, Any]
) -> str:
    """Write ``root/iter_N`` on all ranks (collective), then point the tracker at it."""
    model_sd = _unwrap(model).sharded_state_dict()
    state = {
        "model": model_sd,
        "optimizer": optimizer_sharded_state(optimizer, model_sd, is_loading=False),
        "rng_state": _rng_sharded_object(dist.get_world_size(), dist.get_rank()),
        "format_version": FORMAT_VERSION,
        "iteration": iteration,
        "optimizer_kind": optimizer_kind(optimizer),
        **common,
    }
    return save_state(root, iteration, state)


# --------------------------------------------------------------------------------------------
# Load


@dataclass
class LoadedCheckpoint:
    """What :func:`load_checkpoint` restored."""

    path: str
    iteration: int
    consumed_samples: int
    common: Dict[str, Any]


def load_checkpoint(
    load_dir: str,
    model: torch.nn.Module,
    optimizer: Any,
    identity: Dict[str, Any],
    must_exist: bool,
) -> Optional[LoadedCheckpoint]:
    """Restore model, optimizer and (same world size) RNG from the newest checkpoint in
    ``load_dir``; None if there is none and ``must_exist`` is False."""
    path = find_checkpoint(load_dir)
    if path is None:
        if must_exist:
            raise CheckpointError(
                f"--load {load_dir}: no checkpoint there ({TRACKER} missing); give the --save "
                "folder of an earlier run"
            )
        logger.info("--load %s: no checkpoint yet, starting from iteration 0", load_dir)
        return None
    common = read_common(path)
    check_identity(common["model_identity"], identity, f"--load {load_dir}")
    if common.get("weights_only"):
        raise CheckpointError(
            f"--load {load_dir}: {path} holds weights only (no optimizer state, e.g. converted "
            "from Hugging Face); start a new run from it with --finetune, or with "
            f"--pretrained-checkpoint {load_dir}"
        )
    saved_kind, kind = common.get("optimizer_kind"), optimizer_kind(optimizer)
    if saved_kind is not None and saved_kind != kind:
        raise CheckpointError(
            f"--load {load_dir}: {path} holds the state of the {saved_kind} optimizer, this run "
            f"uses the {kind} one (their states differ); resume it where it was written, or "
            f"start a new run from its weights with --pretrained-checkpoint {load_dir}"
        )
    model_sd = _unwrap(model).sharded_state_dict()
    request = {
        "model": model_sd,
        "optimizer": optimizer_sharded_state(optimizer, model_sd, is_loading=True),
    }
    world = dist.get_world_size()
    same_world = common.get("layout", {}).get("world_size") == world
    if same_world:
        request["rng_state"] = _rng_sharded_object(world, dist.get_rank())
    else:
        logger.warning(
            "checkpoint written by %s processes, resuming on %d: RNG states are reseeded",
            common.get("layout", {}).get("world_size"),
            world,
        )
    state = load_sharded(request, path, f"--load {load_dir}")
    apply_model_state(_unwrap(model), state["model"], f"--load {load_dir}")
    optimizer.load_state_dict(state["optimizer"])
    if same_world:
        set_rng_state(state["rng_state"])
    logger.info("loaded checkpoint %s (iteration %d)", path, common["iteration"])
    return LoadedCheckpoint(path, common["iteration"], common["consumed_samples"], common)


def load_weights(
    checkpoint_dir: str, model: torch.nn.Module, identity: Dict[str, Any], where: str
) -> Dict[str, Any]:
    """Load only the model weights of the newest checkpoint in ``checkpoint_dir`` (any saved TP
    or world size); the iteration, optimizer and data position of the new run start afresh.
    Returns the checkpoint's common state. The caller refreshes the optimizer's copies of the
    weights (``reload_model_params``)."""
    path = require_checkpoint(checkpoint_dir, where)
    common = read_common(path)
    check_identity(common["model_identity"], identity, where)
    state = load_sharded({"model": _unwrap(model).sharded_state_dict()}, path, where)
    apply_model_state(_unwrap(model), state["model"], where)
    logger.info(
        "%s: loaded the weights of %s (iteration %d); new run from iteration 0",
        where, path, common["iteration"],
    )
    return common
