"""Encoding worker processes: started first, configured later, results in submission order.

The pool is forked at the very start of a run, before megatron-core (and torch) are imported by
the tokenizer, so each worker is a small process that starts in milliseconds. Its configuration
(the checked batch encoder, whether the body is shared) is only known after the start-up checks;
workers wait for it on a queue. Where ``fork`` is unavailable, workers are spawned the same way.

At most ``2 x workers`` chunks are in flight (``Pool.imap`` would read the whole input ahead, the
memory blow-up users of Megatron-LM's tool report) and results are taken in submission order, so
the output does not depend on the number of workers.
"""

from __future__ import annotations

import collections
import multiprocessing
from typing import Callable, Deque, Iterable, Tuple

from megatron_meta.preprocess.pipeline import EncoderConfig, encode_chunk, init_worker_from_queue


class WorkerPool:
    """``workers`` encoding processes; use as a context manager."""

    def __init__(self, workers: int) -> None:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        ctx = multiprocessing.get_context(method)
        self.workers = workers
        self._configs = ctx.SimpleQueue()
        self._pool = ctx.Pool(
            workers, initializer=init_worker_from_queue, initargs=(self._configs,)
        )

    def configure(self, config: EncoderConfig) -> None:
        """Hand every worker its configuration (they block until then)."""
        for _ in range(self.workers):
            self._configs.put(config)

    def run(self, chunks: Iterable[Tuple], write: Callable) -> None:
        """Encode ``chunks`` (``(key, docs)``) and call ``write(key, encoded)`` in input order."""
        in_flight: Deque = collections.deque()
        for task in chunks:
            in_flight.append(self._pool.apply_async(encode_chunk, (task,)))
            if len(in_flight) >= 2 * self.workers:
                write(*in_flight.popleft().get())
        while in_flight:
            write(*in_flight.popleft().get())

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        # terminate, not close: on errors, workers may still be waiting for their configuration.
        self._pool.terminate()
        self._pool.join()
