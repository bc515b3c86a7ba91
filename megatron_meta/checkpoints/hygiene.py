"""Checkpoint writing that leaves nothing behind: no helper processes, no partial folders.

megatron-core 0.16.1's ``FileSystemWriterAsync`` (the ``torch_dist`` save strategy) hands its
write results over through ``filesystem_async._results_queue``, which it creates on first use as
``mp.get_context("spawn").Manager().Queue()``: a Manager server process and a multiprocessing
resource tracker that stay children of the trainer for the rest of its life (and outlive it as
orphans). Slurm signals every process of a job step, so a preemption signal kills them and the
next save dies with ``BrokenPipeError`` in ``write_preloaded_data_multiproc``. We save
synchronously (``async_sharded_save=False``): the results are put and taken in this same
process, so a plain in-process queue carries them and neither helper is ever started. The
short-lived forked writer processes remain (one per bucket, joined before the save returns);
they inherit the trainer's stop-signal handlers, so a signal during a save only sets a flag.
"""

from __future__ import annotations

import glob
import logging
import os
import queue
import shutil
from typing import List

logger = logging.getLogger(__name__)


def write_results_in_process() -> None:
    """Make dist_checkpointing's synchronous saves hand their results over in this process."""
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    current = getattr(filesystem_async, "_results_queue", None)
    if not isinstance(current, queue.Queue):
        filesystem_async._results_queue = queue.Queue()


def remove_partial_checkpoints(root: str) -> List[str]:
    """Delete ``iter_*.tmp`` folders of ``root`` (saves that never completed: each as large as
    a checkpoint, never read); returns what was removed. Call while no save runs."""
    removed = []
    for path in sorted(glob.glob(os.path.join(root, "iter_*.tmp"))):
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            logger.warning("removed %s: an incomplete checkpoint of an earlier attempt", path)
    return removed
