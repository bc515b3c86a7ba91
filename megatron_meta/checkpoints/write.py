"""Write one checkpoint crash-safely (all ranks of the process group take part).

A checkpoint is written to ``iter_N.tmp`` and renamed to ``iter_N`` when every rank has finished;
only then is the tracker file replaced (temporary file + rename). A crash at any point leaves the
tracker naming the previous, complete checkpoint.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any, Dict

import torch.distributed as dist

from megatron_meta.checkpoints.hygiene import write_results_in_process
from megatron_meta.checkpoints.layout import TRACKER, iteration_dir

logger = logging.getLogger(__name__)


def write_tracker(root: str, iteration: int) -> None:
    tmp = os.path.join(root, TRACKER + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{iteration}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(root, TRACKER))


def save_state(root: str, iteration: int, state: Dict[str, Any]) -> str:
    """``dist_checkpointing.save(state)`` into ``root/iter_N`` (collective), then the tracker."""
    from megatron.core import dist_checkpointing

    rank = dist.get_rank()
    final = iteration_dir(root, iteration)
    tmp = final + ".tmp"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # left by an earlier crash
        os.makedirs(tmp)
    dist.barrier()
    write_results_in_process()  # no Manager / resource-tracker processes (hygiene.py)
    dist_checkpointing.save(state, tmp)
    dist.barrier()
    if rank == 0:
        old = final + ".old"
        if os.path.exists(final):  # an earlier run's, or this iteration saved before
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        write_tracker(root, iteration)
        shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    logger.info("saved checkpoint %s", final)
    return final
