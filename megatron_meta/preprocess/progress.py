"""Progress of a preprocessing run: a tqdm bar on a terminal, log lines every ``--log-interval``."""

from __future__ import annotations

import logging
import sys
import time

logger = logging.getLogger(__name__)


class Progress:
    """Documents/s and MB/s of text, shown as a bar (terminal) and logged periodically."""

    def __init__(self, log_interval: int, enabled: bool = True) -> None:
        self.log_interval = max(1, log_interval)
        self._start = time.perf_counter()
        self._next_log = self.log_interval
        self._bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(unit=" docs", unit_scale=True, dynamic_ncols=True, file=sys.stderr)

    def _rates(self, documents: float, text_bytes: float):
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        return documents / elapsed, text_bytes / elapsed / 1e6

    def update(self, new_documents: int, text_bytes: float) -> None:
        if self._bar is not None:
            self._bar.update(new_documents)
            _, mbps = self._rates(self._bar.n, text_bytes)
            self._bar.set_postfix_str(f"{mbps:.2f} MB/s", refresh=False)
            return
        done = getattr(self, "_done", 0) + new_documents
        self._done = done
        if done >= self._next_log:
            docs_s, mbps = self._rates(done, text_bytes)
            logger.info("processed %d documents (%.0f docs/s, %.2f MB/s)", done, docs_s, mbps)
            while self._next_log <= done:
                self._next_log += self.log_interval

    def close(self, documents: float, text_bytes: float) -> None:
        if self._bar is not None:
            self._bar.close()
        docs_s, mbps = self._rates(documents, text_bytes)
        logger.info(
            "encoded %d documents in %.1f s (%.0f docs/s, %.2f MB/s of text)",
            documents,
            time.perf_counter() - self._start,
            docs_s,
            mbps,
        )
