"""Held-out documents (``--holdout-test``, ``--holdout-valid-fraction``), kept out of shards.

Deterministic and streaming:

* Every document gets a key: the first 8 bytes of BLAKE2b(``seed``, salt, document id), as an
  integer. It depends only on the seed and the id, not on the order of inputs or the workers.
* **test**: exactly ``N`` documents per region (``--holdout-test N``; region = the ``--split-by``
  region, or the whole corpus with ``--split-by none``), namely the ``N`` smallest keys (ties,
  e.g. duplicate ids, broken by position in the stream). A first pass over the corpus keeps only a
  bounded heap of ``N`` entries per region, so memory depends on ``N`` x regions, not on the corpus.
* **valid**: of the remaining documents, those whose (differently salted) key falls below
  ``F x 2^64`` (``--holdout-valid-fraction F``): each document independently with probability
  ``F``, so the share is ``F`` in expectation, not exactly.

The same seed and the same corpus give the same split, with any number of workers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import logging
from typing import Dict, Iterable, List, Optional, Set, Tuple

from megatron_meta.errors import ConfigError

logger = logging.getLogger(__name__)

_U64 = 1 << 64


@dataclasses.dataclass
class HoldoutConfig:
    """Held-out splits."""

    test_per_region: int = 0
    """``--holdout-test``: documents per region written to ``*_test_*.jsonl``."""
    valid_fraction: float = 0.0
    """``--holdout-valid-fraction``: expected share of the rest written to ``*_valid_*.jsonl``."""
    seed: int = 1234
    """``--seed``: the split is a function of the seed and the document ids."""

    @property
    def active(self) -> bool:
        return self.test_per_region > 0 or self.valid_fraction > 0

    def validate(self) -> None:
        if self.test_per_region < 0:
            raise ConfigError(f"--holdout-test {self.test_per_region}: must be >= 0")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ConfigError(
                f"--holdout-valid-fraction {self.valid_fraction}: must be in [0, 1), e.g. 0.1"
            )


def document_key(seed: int, salt: str, doc_id: str) -> int:
    """Uniform 64-bit key of a document id under ``seed``."""
    digest = hashlib.blake2b(f"{seed}\x00{salt}\x00{doc_id}".encode("utf-8"), digest_size=8)
    return int.from_bytes(digest.digest(), "big")


class HoldoutSelector:
    """Assigns ``"test"``, ``"valid"`` or None (training) to each document of a stream."""

    def __init__(self, config: HoldoutConfig) -> None:
        config.validate()
        self.config = config
        self._test: Set[int] = set()
        self._valid_below = int(config.valid_fraction * _U64)
        self.region_counts: Dict[Optional[str], int] = {}

    def scan(self, stream: Iterable[Tuple[int, Optional[str], str]]) -> None:
        """First pass over ``(position, region, doc_id)``: choose the test documents."""
        if self.config.test_per_region <= 0:
            return
        heaps = TestHeaps(self.config)
        for position, region, doc_id in stream:
            heaps.add(position, region, doc_id)
        self.choose(heaps)

    def choose(self, heaps: "TestHeaps") -> None:
        """Take the test documents from a finished :class:`TestHeaps`."""
        n = self.config.test_per_region
        counts = heaps.counts
        self.region_counts = dict(counts)
        small = {r: c for r, c in counts.items() if c <= n}
        if small:
            listed = ", ".join(f"{r or 'all'}: {c}" for r, c in sorted(small.items(), key=str))
            raise ConfigError(
                f"--holdout-test {n} leaves no training documents in region(s) {listed}; "
                "lower --holdout-test or drop those regions (--countries)"
            )
        self._test = {pos for entries in heaps.entries().values() for _, pos in entries}
        logger.info("held out %d test documents per region (%d regions)", n, len(counts))

    @property
    def test_positions(self) -> Set[int]:
        return self._test

    def is_valid(self, doc_id: str) -> bool:
        """Whether a document that is not a test document goes to the validation split."""
        return bool(self._valid_below) and (
            document_key(self.config.seed, "valid", doc_id) < self._valid_below
        )

    def assign(self, position: int, doc_id: str) -> Optional[str]:
        """The split of the document at ``position`` of the stream (same order as :meth:`scan`)."""
        if position in self._test:
            return "test"
        return "valid" if self.is_valid(doc_id) else None


class TestHeaps:
    """The ``--holdout-test`` smallest ``(key, position)`` pairs per region, and region sizes.

    Ties (duplicate ids) are broken by position. Heaps of pieces of the corpus combine with
    :meth:`update` (positions made global first), so a pass may run in several processes.
    """

    def __init__(self, config: HoldoutConfig) -> None:
        self.n = config.test_per_region
        self.seed = config.seed
        # Max-heap (negated) of the n smallest (key, position) pairs per region.
        self._heaps: Dict[Optional[str], List[Tuple[int, int]]] = {}
        self.counts: Dict[Optional[str], int] = {}

    def add(self, position: int, region: Optional[str], doc_id: str) -> None:
        self.counts[region] = self.counts.get(region, 0) + 1
        if self.n > 0:
            self._push(region, document_key(self.seed, "test", doc_id), position)

    def _push(self, region: Optional[str], key: int, position: int) -> None:
        if self.n <= 0:
            return
        entry = (-key, -position)
        heap = self._heaps.setdefault(region, [])
        if len(heap) < self.n:
            heapq.heappush(heap, entry)
        elif entry > heap[0]:
            heapq.heapreplace(heap, entry)

    def entries(self) -> Dict[Optional[str], List[Tuple[int, int]]]:
        """``{region: [(key, position), ...]}``."""
        return {r: [(-k, -p) for k, p in heap] for r, heap in self._heaps.items()}

    def update(self, other: "TestHeaps", offset: int) -> None:
        """Add the heaps of a later piece whose positions start at ``offset``."""
        for region, count in other.counts.items():
            self.counts[region] = self.counts.get(region, 0) + count
        for region, entries in other.entries().items():
            for key, position in entries:
                self._push(region, key, position + offset)
