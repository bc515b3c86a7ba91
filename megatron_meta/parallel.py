"""Process groups and megatron-core's parallel state: layout validation, setup and teardown.

Launch with ``torchrun`` (one process per GPU, or per CPU rank); :func:`initialize_parallel`
reads its environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).
Without those variables it starts a single-process group, so the same code runs under plain
``python``.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from megatron_meta.errors import ConfigError
from megatron_meta.platform import cpu as platform
from megatron_meta.watchdog import watch_launcher

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParallelInfo:
    """Where this process sits in the parallel layout."""

    rank: int
    """Global rank in the default process group."""
    world_size: int
    """Number of processes."""
    local_rank: int
    """Rank on this node (selects the GPU)."""
    tp_size: int
    """Tensor-parallel degree."""
    tp_rank: int
    """Rank within this process's tensor-parallel group."""
    dp_size: int
    """Data-parallel degree (world_size / tp_size)."""
    dp_rank: int
    """Rank within this process's data-parallel group."""
    device: torch.device
    """Device this process computes on (``cuda:LOCAL_RANK`` or the CPU)."""


def validate_layout(
    world_size: int,
    tp: int,
    num_attention_heads: int,
    num_query_groups: int,
    micro_batch_size: int,
    global_batch_size: int,
) -> int:
    """Check a parallel layout before anything starts; return the data-parallel size."""
    if tp < 1:
        raise ConfigError(f"--tensor-model-parallel-size {tp} must be at least 1")
    if world_size % tp:
        raise ConfigError(
            f"--tensor-model-parallel-size {tp} does not divide the world size {world_size} "
            f"(number of processes): launch a multiple of {tp} processes or change the TP size"
        )
    if num_attention_heads % tp:
        raise ConfigError(
            f"--tensor-model-parallel-size {tp} does not divide "
            f"num_attention_heads={num_attention_heads}"
        )
    if num_query_groups % tp:
        raise ConfigError(
            f"--tensor-model-parallel-size {tp} does not divide "
            f"num_query_groups={num_query_groups} (key/value heads)"
        )
    if micro_batch_size < 1:
        raise ConfigError(f"--micro-batch-size {micro_batch_size} must be at least 1")
    dp = world_size // tp
    if global_batch_size % (micro_batch_size * dp):
        raise ConfigError(
            f"--global-batch-size {global_batch_size} is not a multiple of --micro-batch-size "
            f"{micro_batch_size} x data-parallel size {dp} (= {micro_batch_size * dp})"
        )
    return dp


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init_process_group(backend: str) -> None:
    if dist.is_initialized():
        return
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        dist.init_process_group(backend=backend)  # torchrun's env:// rendezvous
    else:
        # Plain `python`: a group of one, so megatron-core's collectives still have a group.
        dist.init_process_group(
            backend=backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
        )


def initialize_parallel(tp: int, seed: int) -> ParallelInfo:
    """Start the process group and megatron-core's model-parallel state and RNG trackers."""
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    platform.apply_cpu_accommodations()
    watch_launcher()  # a rank whose torchrun died exits instead of hanging
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if platform.cuda_available():
        torch.cuda.set_device(platform.device())
        backend = "nccl"
    else:
        backend = "gloo"
    _init_process_group(backend)
    world_size = dist.get_world_size()
    if world_size % tp:
        raise ConfigError(
            f"--tensor-model-parallel-size {tp} does not divide the world size {world_size}"
        )
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp)
    elif parallel_state.get_tensor_model_parallel_world_size() != tp:
        raise ConfigError(
            f"megatron-core is already initialized with TP="
            f"{parallel_state.get_tensor_model_parallel_world_size()}, not {tp}: call "
            "destroy_parallel() first"
        )
    # The CPU generator too (CPU-initialized weights, anything else drawn on the host); on the
    # CPU this is also the generator megatron's tracker forks from.
    torch.manual_seed(seed)
    model_parallel_cuda_manual_seed(seed)
    info = ParallelInfo(
        rank=dist.get_rank(),
        world_size=world_size,
        local_rank=local_rank,
        tp_size=tp,
        tp_rank=parallel_state.get_tensor_model_parallel_rank(),
        dp_size=parallel_state.get_data_parallel_world_size(),
        dp_rank=parallel_state.get_data_parallel_rank(),
        device=platform.device(),
    )
    if info.rank == 0:
        logger.info(
            "parallel layout: world %d = TP %d x DP %d, backend %s, device %s",
            world_size, tp, info.dp_size, backend, info.device.type,
        )
    return info


def destroy_parallel() -> None:
    """Tear down megatron-core's parallel state and the process group (safe to call twice)."""
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
