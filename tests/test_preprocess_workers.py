"""The worker pool's maintenance thread: quiet while results stream, still replaces dead workers."""

import os
import signal
import time

from megatron_meta.preprocess.workers import WorkerPool


def _pids(pool: WorkerPool):
    return {p.pid for p in pool._pool._pool if p.is_alive()}


def test_dead_worker_is_replaced():
    # _Pool drops the result pipe from what the maintenance thread waits on; the worker sentinels
    # must still wake it when a worker dies, so the pool keeps its size.
    with WorkerPool(1) as pool:
        (pid,) = _pids(pool)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = _pids(pool)
            if len(pids) == 1 and pid not in pids:
                break
            time.sleep(0.05)
        assert len(pids) == 1 and pid not in pids
