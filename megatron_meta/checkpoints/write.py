"""Write one checkpoint crash-safely (all ranks of the process group take part).

A checkpoint is written to ``iter_N.tmp``; when every rank has finished, rank 0 records its files
and sizes (``files.json``, which readers check) and renames it to ``iter_N``; only then is the
tracker file replaced (temporary file + rename). A crash at any point leaves the tracker naming the
previous, complete checkpoint. A rank that cannot write (a full disk) makes every rank stop with
one message, after rank 0 removed ``iter_N.tmp``.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any, Dict

import torch
import torch.distributed as dist

from megatron_meta.checkpoints.hygiene import write_results_in_process
from megatron_meta.checkpoints.layout import TRACKER, iteration_dir, record_files
from megatron_meta.errors import CheckpointError, OutputError
from megatron_meta.outputs import disk_full_guard, disk_full_message, looks_full

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
    failure = None
    try:
        write_results_in_process()  # no Manager / resource-tracker processes (hygiene.py)
        dist_checkpointing.save(state, tmp)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # DCP's CheckpointException is a BaseException
        failure = e  # every rank learns of it below, so none waits forever
    _stop_if_any_failed(failure, final, tmp, rank)
    if rank == 0:
        with disk_full_guard(final, lambda: [tmp]):
            record_files(tmp)
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


def _stop_if_any_failed(failure, final: str, tmp: str, rank: int) -> None:
    """Collective: if any rank failed to write, rank 0 removes ``tmp`` and every rank raises."""
    device = torch.cuda.current_device() if dist.get_backend() == "nccl" else "cpu"
    needed = _previous_size(tmp) if failure is not None else 0
    code = 0 if failure is None else (2 if looks_full(failure, tmp, needed) else 1)
    flags = torch.tensor([code], device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    if int(flags.item()) == 0:
        return
    written = _folder_size(tmp) if rank == 0 else 0
    dist.barrier()  # every rank stopped writing before the temporary goes
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    if int(flags.item()) == 2:
        message = disk_full_message(final, written, needed or None, removed=tmp)
        raise OutputError(message + "; the last complete checkpoint is untouched")
    if failure is not None:
        raise failure  # not a user error: keep its traceback
    raise CheckpointError(
        f"{final}: another rank failed to save the checkpoint (see its output); {tmp} was "
        "removed, the last complete checkpoint is untouched"
    )


def _previous_size(tmp: str) -> int:
    """Size of the newest earlier checkpoint beside ``tmp``: about what this one needs."""
    from megatron_meta.checkpoints.layout import latest_checkpoint

    try:
        earlier = latest_checkpoint(os.path.dirname(tmp))
    except Exception:  # noqa: BLE001 - only an estimate for the message
        return 0
    return _folder_size(earlier) if earlier else 0


def _folder_size(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files
    )
