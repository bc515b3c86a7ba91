"""One step's gradient: the forward and backward passes over a step's micro-batches into
megatron DDP's buffers, and how DDP reduces them."""

from __future__ import annotations

import contextlib
import os
from typing import Dict, Iterable, Optional

import torch
import torch.distributed as dist

from megatron_meta.parallel import ParallelInfo
from megatron_meta.platform import cpu as platform


def _to_device(mb: Dict[str, torch.Tensor], device: torch.device) -> Dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in mb.items()}


def forward_backward(
    model: torch.nn.Module, micro_batches: Iterable[Dict[str, torch.Tensor]], info: ParallelInfo
) -> float:
    """Accumulate the gradient of the global-batch mean loss into megatron DDP's buffers.

    Micro-batches are pulled one at a time; the next one is fetched and its (pinned,
    non-blocking) copy to the GPU issued before the current forward, so loading overlaps compute.
    As in Megatron-LM's per-token loss, each backward is of the summed loss and the gradients
    are divided by the global token count once it is known, after the reduction.
    """
    from megatron.core import parallel_state

    dp_group = parallel_state.get_data_parallel_group()
    device = info.device
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, loss-bearing tokens
    pending = iter(micro_batches)
    upcoming = next(pending, None)
    if upcoming is None:
        raise ValueError("forward_backward() needs at least one micro-batch")
    upcoming = _to_device(upcoming, device)
    while upcoming is not None:
        mb = upcoming
        following = next(pending, None)
        upcoming = None if following is None else _to_device(following, device)
        # megatron DDP reduces once, after the last micro-batch's backward.
        sync = contextlib.nullcontext() if upcoming is None else model.no_sync()
        with sync:
            per_token = model(mb["tokens"], mb["position_ids"], None, labels=mb["labels"])
            summed = (per_token.float() * mb["loss_mask"]).sum()
            summed.backward()
        totals[0] += summed.detach().double()
        totals[1] += mb["loss_mask"].sum().double()
    model.finish_grad_sync()
    dist.all_reduce(totals, group=dp_group)
    denominator = max(float(totals[1].item()), 1.0)
    # megatron DDP averaged the gradients over data-parallel ranks; dp_size turns that into a sum.
    model.scale_gradients(info.dp_size / denominator)
    return float(totals[0].item()) / denominator


def overlap_grad_reduce(requested: Optional[bool], info: ParallelInfo) -> bool:
    """``--overlap-grad-reduce``, by default on with CUDA when data-parallel ranks span nodes
    (where the reduction is slow enough to be worth hiding behind the backward)."""
    if requested is not None:
        return requested
    local = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
    return platform.cuda_available() and info.dp_size > 1 and local < info.world_size
