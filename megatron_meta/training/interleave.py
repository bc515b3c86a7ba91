"""``--region-mix interleave``: the paper's global and leave-one-out data, at blend time.

The authors (FACTS 1a) built global data from documents, not tokens: groups of one document per
region, the regions shuffled within each group with the seed, as many groups as the SMALLEST
region has documents; group ``g`` holds document ``g`` of every region, so the larger regions'
later documents are never seen. Leave-one-out is the same over the regions kept. We read that
stream straight from the regions' shards (no data rewritten): document after document, cut into
samples of ``seq_length + 1`` tokens in order, as a packed pretraining stream is; a run longer than
the stream starts it again from the top.

Regions are ordered as the authors' list (Africa, Asia, Europe, America; any other after them,
by name) before each group is shuffled with ``random.Random(seed)``, so the shuffles are theirs.
"""

from __future__ import annotations

import logging
import random
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_meta.errors import DataError
from megatron_meta.manifest import ShardEntry
from megatron_meta.training.shards import region_name

logger = logging.getLogger(__name__)

AUTHORS_REGION_ORDER = ("africa", "asia", "europe", "america")


def region_order(names: Sequence[str]) -> List[int]:
    """Indices of ``names`` in the authors' order (others after them, alphabetically)."""
    def key(i: int) -> Tuple[int, str]:
        lower = names[i].lower()
        rank = AUTHORS_REGION_ORDER.index(lower) if lower in AUTHORS_REGION_ORDER else len(AUTHORS_REGION_ORDER)
        return rank, lower
    return sorted(range(len(names)), key=key)


def interleaved_order(counts: Sequence[int], names: Sequence[str], seed: int) -> List[Tuple[int, int]]:
    """(region index, document index) in the order the run reads them.

    ``counts[r]`` is how many training documents region ``r`` has; group ``g`` takes document ``g``
    of each region, shuffled, for ``g`` below the smallest count.
    """
    regions = region_order(names)
    rng = random.Random(seed)
    order: List[Tuple[int, int]] = []
    for g in range(min(counts) if counts else 0):
        group = [(r, g) for r in regions]
        rng.shuffle(group)
        order.extend(group)
    return order


class InterleavedDataset(torch.utils.data.Dataset):
    """Samples of ``seq_length + 1`` tokens read in order from the interleaved document stream.

    Items are what ``GPTDataset`` gives (``tokens``, ``labels``, ``loss_mask``, ``position_ids``);
    with metadata counts, labels that are a document's metadata tokens carry no loss.
    """

    def __init__(
        self, shards: Sequence[ShardEntry], doc_ranges: Sequence[Tuple[int, int]], seed: int,
        seq_length: int, num_samples: int, mask_metadata: bool = False,
    ):
        self.prefixes = [s.prefix for s in shards]
        self.seq_length = seq_length
        self.num_samples = num_samples
        # copied: the arrays are views of a memory map that closes with its IndexedDataset
        lengths = []
        for shard in shards:
            indexed = IndexedDataset(shard.prefix)
            lengths.append(np.array(indexed.sequence_lengths))
            del indexed
        counts = [end - beg for beg, end in doc_ranges]
        names = [region_name(s.region) for s in shards]
        order = interleaved_order(counts, names, seed)
        if not order:
            raise DataError(f"--region-mix interleave: a region has no training documents ({names})")
        self.region = np.array([r for r, _ in order], dtype=np.int32)
        self.doc = np.array([doc_ranges[r][0] + g for r, g in order], dtype=np.int64)
        doc_lengths = np.array([lengths[r][d] for r, d in zip(self.region, self.doc)], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(doc_lengths)])
        self.per_pass = int((self.starts[-1] - 1) // seq_length)
        if self.per_pass < 1:
            raise DataError("--region-mix interleave: the documents give less than one sample")
        self.metadata: Optional[List[np.ndarray]] = None
        if mask_metadata:
            self.metadata = [np.load(s.metadata_tokens, mmap_mode="r") for s in shards]
        self._indexed: Optional[List[IndexedDataset]] = None
        smallest = min(counts)
        logger.info(
            "data: interleaved %s, %d groups (the smallest region's documents), %d documents, "
            "%d tokens, %d samples a pass; %d documents of larger regions never read%s",
            ",".join(names[i] for i in region_order(names)), smallest, len(order),
            int(self.starts[-1]), self.per_pass, sum(counts) - len(order),
            "" if num_samples <= self.per_pass else
            f"; the run reads the stream {num_samples / self.per_pass:.1f} times",
        )

    def __len__(self) -> int:
        return self.num_samples

    def _datasets(self) -> List[IndexedDataset]:
        if self._indexed is None:  # opened lazily, so each loader worker maps its own files
            self._indexed = [IndexedDataset(p) for p in self.prefixes]
        return self._indexed

    def document_ids(self) -> List[Tuple[str, int]]:
        """(region, document index in its shard) of every document of one pass, in order."""
        return [(self.prefixes[r], int(d)) for r, d in zip(self.region, self.doc)]

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        first = (idx % self.per_pass) * self.seq_length
        last = first + self.seq_length + 1
        k = int(np.searchsorted(self.starts, first, side="right")) - 1
        parts, meta = [], []
        datasets = self._datasets()
        while first < last:
            r, d = int(self.region[k]), int(self.doc[k])
            offset = int(first - self.starts[k])
            length = int(min(last, self.starts[k + 1]) - first)
            parts.append(np.asarray(datasets[r].get(d, offset=offset, length=length), dtype=np.int64))
            if self.metadata is not None:
                meta.append(np.arange(offset, offset + length) < int(self.metadata[r][d]))
            first += length
            k += 1
        text = torch.from_numpy(np.concatenate(parts))
        loss_mask = torch.ones(self.seq_length, dtype=torch.float)
        if self.metadata is not None:
            loss_mask[torch.from_numpy(np.concatenate(meta)[1:])] = 0.0
        return {
            "tokens": text[:-1].contiguous(),
            "labels": text[1:].contiguous(),
            "loss_mask": loss_mask,
            "position_ids": torch.arange(self.seq_length, dtype=torch.long),
        }
