"""What to do with a record that cannot be used: stop, or skip and count it.

Readers call :meth:`BadRecords.report` with a reason key (``malformed_json``, ``missing_text``,
``unknown_country``...) and a location (``file:line`` or a NOW textID). Under ``error`` the run
stops with a :class:`~megatron_meta.errors.DataError` naming that location; under ``skip`` the
record is counted by reason, the first few are logged, and the counts end up in the manifest and
the final summary, so nothing disappears silently.
"""

from __future__ import annotations

import collections
import logging
from typing import Dict

from megatron_meta.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

MODES = ("error", "skip")


class BadRecords:
    """Policy and tally for unusable records (``--on-bad-record error|skip``)."""

    def __init__(self, mode: str = "error", log_first: int = 5) -> None:
        if mode not in MODES:
            raise ConfigError(f"--on-bad-record: {mode!r} is not one of {', '.join(MODES)}")
        self.mode = mode
        self.log_first = log_first
        self.counts: Dict[str, int] = collections.Counter()

    def report(self, reason: str, where: str, detail: str) -> None:
        """Record one bad record; raises under ``error`` mode.

        Args:
            reason: Short key counted in the manifest, e.g. ``"missing_text"``.
            where: Location a user can open: ``path:line`` or ``path (textID 123)``.
            detail: What is wrong and, where useful, what to do.
        """
        message = f"{where}: {detail}"
        if self.mode == "error":
            raise DataError(message + " (use --on-bad-record skip to skip and count such records)")
        self.counts[reason] += 1
        if self.counts[reason] <= self.log_first:
            logger.warning("skipping record: %s", message)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: Dict[str, int]) -> None:
        """Add counts reported elsewhere (e.g. by worker processes)."""
        for reason, n in other.items():
            self.counts[reason] += n

    def summary(self) -> Dict[str, int]:
        return dict(sorted(self.counts.items()))
