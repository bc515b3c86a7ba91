"""Checkpoints with megatron-core ``dist_checkpointing``: save, resume, load for evaluation.

Layout of a ``--save`` folder (the names Megatron-LM users know)::

    latest_checkpointed_iteration.txt   the iteration of the newest complete checkpoint
    iter_0000100/                       one dist_checkpointing checkpoint
    config.yaml, metrics.jsonl          written by the trainer

A checkpoint holds the model and optimizer as sharded tensors (so a TP=2 checkpoint loads at
TP=1), each rank's RNG states, and in its common part the iteration, the consumed samples, the
model's preset and vocabulary (a checkpoint of another model is refused with a
:class:`CheckpointError`) and the run's resolved config.

Crash safety: a checkpoint is written to ``iter_N.tmp`` and renamed to ``iter_N`` when every
rank has finished; only then is the tracker file replaced (temporary file + rename). A crash at
any point leaves the tracker naming the previous, complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import shutil
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist

from megatron_meta.errors import CheckpointError
from megatron_meta.models.presets import ModelPreset

logger = logging.getLogger(__name__)

TRACKER = "latest_checkpointed_iteration.txt"
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
    text = open(tracker, encoding="utf-8").read().strip()
    try:
        path = iteration_dir(root, int(text))
    except ValueError:
        raise CheckpointError(f"{tracker}: expected an iteration number, found {text[:40]!r}")
    for candidate in (path, path + ".old"):  # .old: a crash while replacing the same iteration
        if _is_checkpoint(candidate):
            return candidate
    raise CheckpointError(f"{tracker} names iteration {text} but {path} is missing or incomplete")


# --------------------------------------------------------------------------------------------
# What a checkpoint says about its model


def model_identity(preset: ModelPreset, vocab_size: int) -> Dict[str, Any]:
    """The preset (all fields, so it can be rebuilt) and the tokenizer's vocabulary size."""
    return {"preset": dataclasses.asdict(preset), "vocab_size": int(vocab_size)}


def check_identity(saved: Dict[str, Any], current: Dict[str, Any], where: str) -> None:
    """Raise CheckpointError if the checkpoint's model is not the one being trained."""
    s_preset, c_preset = saved["preset"], current["preset"]
    diffs = [
        f"{k} {s_preset.get(k)} vs {c_preset.get(k)}"
        for k in SHAPE_FIELDS
        if s_preset.get(k) != c_preset.get(k)
    ]
    if saved["vocab_size"] != current["vocab_size"]:
        diffs.append(f"vocabulary {saved['vocab_size']} vs {current['vocab_size']}")
    if diffs:
        raise CheckpointError(
            f"{where} holds a checkpoint of model {s_preset['name']!r}, not of --model "
            f"{c_preset['name']!r} ({'; '.join(diffs)}); use --model {s_preset['name']} with this "
            "checkpoint, or --load another folder"
        )


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


def _write_tracker(root: str, iteration: int) -> None:
    tmp = os.path.join(root, TRACKER + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{iteration}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(root, TRACKER))


def save_checkpoint(
    root: str, iteration: int, model: torch.nn.Module, optimizer: Any, common: Dict[str, Any]
) -> str:
    """Write ``root/iter_N`` on all ranks (collective), then point the tracker at it."""
    from megatron.core import dist_checkpointing

    rank = dist.get_rank()
    final = iteration_dir(root, iteration)
    tmp = final + ".tmp"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # left by an earlier crash
        os.makedirs(tmp)
    dist.barrier()
    model_sd = _unwrap(model).sharded_state_dict()
    state = {
        "model": model_sd,
        "optimizer": optimizer.sharded_state_dict(model_sd, is_loading=False),
        "rng_state": _rng_sharded_object(dist.get_world_size(), rank),
        "format_version": FORMAT_VERSION,
        "iteration": iteration,
        **common,
    }
    dist_checkpointing.save(state, tmp)
    dist.barrier()
    if rank == 0:
        old = final + ".old"
        if os.path.exists(final):  # an earlier run's, or this iteration saved before
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        _write_tracker(root, iteration)
        shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    logger.info("saved checkpoint %s", final)
    return final


# --------------------------------------------------------------------------------------------
# Load


@dataclass
class LoadedCheckpoint:
    """What :func:`load_checkpoint` restored."""

    path: str
    iteration: int
    consumed_samples: int
    common: Dict[str, Any]


def read_common(path: str) -> Dict[str, Any]:
    from megatron.core import dist_checkpointing

    try:
        common = dist_checkpointing.load_common_state_dict(path)
    except Exception as e:  # megatron raises several types for a damaged folder
        raise CheckpointError(f"{path}: cannot read the checkpoint ({e})") from e
    if common.get("format_version") != FORMAT_VERSION or "model_identity" not in common:
        raise CheckpointError(
            f"{path}: not a megatron-meta checkpoint (format {common.get('format_version')!r})"
        )
    return common


def load_checkpoint(
    load_dir: str,
    model: torch.nn.Module,
    optimizer: Any,
    identity: Dict[str, Any],
    must_exist: bool,
) -> Optional[LoadedCheckpoint]:
    """Restore model, optimizer and (same world size) RNG from the newest checkpoint in
    ``load_dir``; None if there is none and ``must_exist`` is False."""
    from megatron.core import dist_checkpointing

    path = latest_checkpoint(load_dir) if os.path.isdir(load_dir) else None
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
    model_sd = _unwrap(model).sharded_state_dict()
    request = {
        "model": model_sd,
        "optimizer": optimizer.sharded_state_dict(model_sd, is_loading=True),
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
    state = dist_checkpointing.load(request, path)
    _unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if same_world:
        set_rng_state(state["rng_state"])
    logger.info("loaded checkpoint %s (iteration %d)", path, common["iteration"])
    return LoadedCheckpoint(path, common["iteration"], common["consumed_samples"], common)


@dataclass
class CheckpointInfo:
    """What a checkpoint says about its model (for evaluation and conversion)."""

    path: str
    iteration: int
    preset: ModelPreset
    vocab_size: int
    seq_length: int
    tokenizer: Optional[Dict[str, Any]]
    config: Dict[str, Any]


def checkpoint_info(checkpoint_dir: str) -> CheckpointInfo:
    """Read a checkpoint's description without loading tensors (no process group needed)."""
    path = latest_checkpoint(checkpoint_dir) if os.path.isdir(checkpoint_dir) else None
    if path is None:
        raise CheckpointError(
            f"{checkpoint_dir}: no checkpoint there; give a --save folder of `megatron-meta train` "
            "or one of its iter_* folders"
        )
    common = read_common(path)
    identity = common["model_identity"]
    return CheckpointInfo(
        path=path,
        iteration=int(common["iteration"]),
        preset=ModelPreset(**identity["preset"]),
        vocab_size=int(identity["vocab_size"]),
        seq_length=int(common["config"]["model"]["seq_length"]),
        tokenizer=common.get("tokenizer"),
        config=common["config"],
    )


def load_model_for_eval(
    checkpoint_dir: str,
    tp: int = 1,
    *,
    backend: str = "auto",
    bf16: Optional[bool] = None,
    seed: int = 1234,
) -> Tuple[torch.nn.Module, CheckpointInfo]:
    """Build the checkpoint's model at tensor-parallel size ``tp`` and load its weights only.

    Starts the process group (a group of one under plain ``python``) if none is running.
    """
    from megatron.core import dist_checkpointing, parallel_state

    from megatron_meta.models.build import build_model
    from megatron_meta.parallel import initialize_parallel

    info = checkpoint_info(checkpoint_dir)
    if not parallel_state.model_parallel_is_initialized():
        initialize_parallel(tp, seed)
    model = build_model(
        info.preset,
        vocab_size=info.vocab_size,
        seq_length=info.seq_length,
        tp_size=tp,
        backend=backend,
        bf16=bf16,
    )
    state = dist_checkpointing.load({"model": model.sharded_state_dict()}, info.path)
    model.load_state_dict(state["model"])
    model.eval()
    logger.info(
        "loaded %s weights from %s (iteration %d)", info.preset.name, info.path, info.iteration
    )
    return model, info
