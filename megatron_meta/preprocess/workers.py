"""Worker processes: started first, configured later, results in submission order.

The pool is forked at the very start of a run, while the process is small (the tokenizer is
loaded on its own library, without megatron-core or torch; NOW's sources rows are loaded just
before, to be shared), so each worker starts in milliseconds. Its configuration
(the checked batch encoder, whether the body is shared) is only known after the start-up checks;
workers wait for it on a queue. Where forking is unsafe (the process already runs other threads,
as inside a test session or a notebook) or unavailable, workers start from a fresh interpreter.

At most ``2 x workers`` jobs are in flight (``Pool.imap`` would read the whole input ahead, the
memory blow-up users of Megatron-LM's tool report) and results are taken in submission order, so
the output does not depend on the number of workers.
"""

from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import multiprocessing.pool
import operator
import os
from typing import Callable, Deque, Iterable

from megatron_meta.corpora.records import Document
from megatron_meta.preprocess.pipeline import EncoderConfig
from megatron_meta.preprocess.tasks import JobSettings, init_worker_from_queue

# Documents the main process reads travel to the workers as plain tuples of their fields: pickling
# a tuple is about half the cost of pickling a dataclass instance.
DOC_FIELDS = operator.attrgetter(*(f.name for f in dataclasses.fields(Document)))


class _Pool(multiprocessing.pool.Pool):
    """``Pool`` whose worker-maintenance thread does not wake on pending results.

    The stock thread waits on the result pipe as well as on the worker processes. A result of a
    chunk is hundreds of kB, and while it streams through the pipe the thread finds it readable
    and loops without sleeping: measured at 0.1-0.15 CPU-s per 50 MB, taken from the workers on
    a machine whose cores they fill. Its job (restarting workers that exited, reacting to
    close/terminate) only needs the worker sentinels and the change notifier, which it still
    watches, plus its 0.1 s timeout.
    """

    def _get_sentinels(self):
        return [self._change_notifier._reader]


def start_method() -> str:
    """``fork`` while this process has one thread (the CLI at start-up: workers start in
    milliseconds); ``forkserver`` (else ``spawn``) once it has more, because a child forked from a
    multi-threaded process (torch's OpenMP pool, tokenizers' Rust pool, a library's helper
    thread) can inherit a lock held by another thread and hang on it forever."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and _thread_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def _thread_count() -> int:
    """OS threads of this process (native ones too, which ``threading`` does not see)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # no procfs: assume threads, take the safe start method
        return 2


class WorkerPool:
    """``workers`` encoding processes; use as a context manager."""

    def __init__(self, workers: int) -> None:
        ctx = multiprocessing.get_context(start_method())
        self.workers = workers
        self._configs = ctx.SimpleQueue()
        self._pool = _Pool(
            workers, initializer=init_worker_from_queue, initargs=(self._configs,), context=ctx
        )

    def configure(self, config: EncoderConfig, settings: JobSettings) -> None:
        """Hand every worker its configuration (they block until then)."""
        for _ in range(self.workers):
            self._configs.put((config, settings))

    def map_ordered(self, fn: Callable, jobs: Iterable, handle: Callable) -> None:
        """``handle(fn(job))`` for every job, in job order, ``fn`` running in the workers."""
        in_flight: Deque = collections.deque()
        for job in jobs:
            in_flight.append(self._pool.apply_async(fn, (job,)))
            if len(in_flight) >= 2 * self.workers:
                handle(in_flight.popleft().get())
        while in_flight:
            handle(in_flight.popleft().get())

    def stop(self) -> None:
        """Stop the workers now (before the run's temporary files are removed)."""
        # terminate, not close: on errors, workers may still be waiting for their configuration.
        self._pool.terminate()
        self._pool.join()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
