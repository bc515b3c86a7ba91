"""A checkpoint's model weights as whole CPU tensors, in one process, at any saved TP size.

megatron-core's ``torch_dist`` format is PyTorch Distributed Checkpoint (DCP) underneath: each
sharded tensor is stored with its global shape, so reading it whole needs neither the process
count nor the tensor-parallel size it was saved with. Per-layer weights are stacked along a
leading layer axis (``decoder.layers.*``: ``[num_layers, ...]``). Only model tensors are read
(optimizer moments and RNG states are left on disk), which keeps memory at one copy of the
weights.
"""

from __future__ import annotations

import logging
import warnings
from typing import Dict, Optional

import torch

from megatron_meta.checkpoints.layout import read_common
from megatron_meta.errors import CheckpointError

logger = logging.getLogger(__name__)

NOT_MODEL = ("optimizer.", "rng_state")


def model_tensor_shapes(path: str) -> Dict[str, tuple]:
    """Model tensor name -> (global shape, dtype) of one ``iter_*`` checkpoint."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    try:
        metadata = FileSystemReader(path).read_metadata()
    except Exception as e:  # a missing or damaged .metadata file
        raise CheckpointError(f"{path}: cannot read the tensor index ({e})") from e
    return {
        key: (tuple(meta.size), meta.properties.dtype)
        for key, meta in metadata.state_dict_metadata.items()
        if isinstance(meta, TensorStorageMetadata) and not key.startswith(NOT_MODEL)
    }


def read_model_tensors(path: str, dtype: Optional[torch.dtype] = None) -> Dict[str, torch.Tensor]:
    """Every model tensor of one ``iter_*`` checkpoint, whole, on the CPU (no process group)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader

    read_common(path)  # refuse a foreign folder with our message, not DCP's
    shapes = model_tensor_shapes(path)
    if not shapes:
        raise CheckpointError(f"{path}: the checkpoint holds no model tensors")
    state = {k: torch.empty(shape, dtype=dt) for k, (shape, dt) in shapes.items()}
    with warnings.catch_warnings():
        # DCP warns that it loads without a process group: that is the point here.
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single")
        try:
            dcp.load(state, storage_reader=FileSystemReader(path), no_dist=True)
        except Exception as e:  # a tensor file cut or deleted in a checkpoint without files.json
            raise CheckpointError(
                f"{path}: cannot read the checkpoint's tensors ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}); the checkpoint is damaged"
            ) from None
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    return state
