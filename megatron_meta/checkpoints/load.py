"""Build a checkpoint's model (any saved TP size, at any TP size) and load its weights only."""

from __future__ import annotations

import logging
from typing import Optional, Tuple

import torch

from megatron_meta.checkpoints.layout import CheckpointInfo, checkpoint_info
from megatron_meta.checkpoints.model_state import apply_model_state, load_sharded

logger = logging.getLogger(__name__)


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
    from megatron.core import parallel_state

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
        init_weights=False,  # every weight comes from the checkpoint
    )
    state = load_sharded({"model": model.sharded_state_dict()}, info.path, checkpoint_dir)
    apply_model_state(model, state["model"], checkpoint_dir)
    model.eval()
    logger.info(
        "loaded %s weights from %s (iteration %d)", info.preset.name, info.path, info.iteration
    )
    return model, info
