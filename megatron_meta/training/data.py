"""Training data from a preprocessing manifest, through megatron-core's dataset builders.

* Shards: the manifest's shards of one metadata variant, one per region (``--split-by``), minus
  ``--exclude-regions``. Regions are blended with ``--region-weights`` (``balanced`` = equal per
  region, the paper's interleaving; default: in proportion to tokens) by megatron-core's
  ``BlendedMegatronDatasetBuilder`` into ``GPTDataset``s, so no data is rewritten.
  ``--region-mix interleave`` reads several regions as the paper mixed them instead
  (:mod:`.interleave`: one document per region a group, the smallest region's count of groups).
* ``--mask-metadata-loss``: :class:`MetadataMaskedGPTDataset` zeroes the loss mask of every label
  that is one of a document's leading metadata tokens (the preprocessing sidecar counts them).
  The label of the first body token (``TITLE:``) keeps its loss, as in MeCo.
* ``--metadata-cooldown-fraction F``: a second phase over the ``none`` variant of the same
  shards for the last F of the iterations.
* Batches: :class:`TrainBatches` hands each iteration's micro-batches to this data-parallel rank.
  Sample ``s`` of the run is read at iteration ``s // global_batch`` by rank
  ``(s % (micro_batch * dp)) // micro_batch``, as Megatron-LM's pretraining sampler lays them
  out; resuming at iteration ``i`` therefore needs only ``i``.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.utils import Split

from megatron_meta.errors import ConfigError, DataError
from megatron_meta.manifest import Manifest, ShardEntry
from megatron_meta.training.config import RunConfig
from megatron_meta.training.shards import blend_weights, region_name, select_shards

logger = logging.getLogger(__name__)


class ShardTokenizer:
    """What ``GPTDataset`` needs of a tokenizer when it only reads ids: vocabulary size and EOD."""

    def __init__(self, vocab_size: int, eod: int):
        self.vocab_size = vocab_size
        self.eod = eod
        self.unique_identifiers = {"class": "ShardTokenizer", "vocab_size": vocab_size, "eod": eod}


@dataclass
class MetadataGPTDatasetConfig(GPTDatasetConfig):
    """``GPTDatasetConfig`` plus where each shard's metadata token counts are."""

    metadata_token_counts: Optional[Dict[str, str]] = None
    """Shard prefix -> sidecar ``.npy``; None disables metadata loss masking."""


class MetadataMaskedGPTDataset(GPTDataset):
    """``GPTDataset`` whose loss mask also excludes labels that are metadata tokens."""

    def __init__(
        self, indexed_dataset, dataset_path, indexed_indices, num_samples, index_split, config
    ):
        super().__init__(
            indexed_dataset, dataset_path, indexed_indices, num_samples, index_split, config
        )
        self.metadata_counts: Optional[np.ndarray] = None
        sidecars = config.metadata_token_counts
        if sidecars is not None:
            self.metadata_counts = load_metadata_counts(
                sidecars[dataset_path], len(indexed_dataset.sequence_lengths)
            )

    def __getitem__(self, idx: Optional[int]) -> Dict[str, torch.Tensor]:
        item = super().__getitem__(idx)
        if self.metadata_counts is not None and idx is not None:
            is_metadata = self.metadata_positions(idx)
            # labels[t] = text[t + 1]: predicting a metadata token carries no loss. Clone first:
            # GPTDataset returns its cached mask itself the first time.
            loss_mask = item["loss_mask"].clone()
            loss_mask[torch.from_numpy(is_metadata[1:])] = 0.0
            item["loss_mask"] = loss_mask
        return item

    def metadata_positions(self, idx: int) -> np.ndarray:
        """Per token of the sample's ``seq_length + 1`` ids: is it one of its document's metadata?

        Walks the same document/offset bookkeeping as ``GPTDataset`` uses to read the sample.
        """
        extra = int(self.config.add_extra_token_to_sequence)
        sample = self.shuffle_index[idx]
        doc_beg, off_beg = self.sample_index[sample]
        doc_end, off_end = self.sample_index[sample + 1]
        lengths = self.dataset.sequence_lengths
        parts = []
        for k in range(int(doc_beg), int(doc_end) + 1):
            doc = int(self.document_index[k])
            start = int(off_beg) if k == doc_beg else 0
            stop = int(off_end) + extra if k == doc_end else int(lengths[doc])
            parts.append(np.arange(start, stop) < self.metadata_counts[doc])
        flags = np.concatenate(parts) if parts else np.zeros(0, dtype=bool)
        total = self.config.sequence_length + extra
        if len(flags) < total:  # GPTDataset pads a short final sample
            flags = np.concatenate([flags, np.zeros(total - len(flags), dtype=bool)])
        return flags


def load_metadata_counts(path: str, documents: int) -> np.ndarray:
    try:
        counts = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the metadata token sidecar ({e}); re-run preprocess")
    if counts.ndim != 1 or len(counts) != documents:
        raise DataError(
            f"{path}: {len(counts)} metadata counts for a shard of {documents} documents; "
            "the sidecar does not belong to this shard, re-run preprocess"
        )
    return counts


# --------------------------------------------------------------------------------------------
# Datasets


@dataclass
class Phase:
    """Iterations ``[start, end)`` read ``dataset`` (the variant's blend)."""

    start: int
    end: int
    variant: str
    dataset: torch.utils.data.Dataset


def dataset_config(config: RunConfig, manifest: Manifest, shards: Sequence[ShardEntry], split: str):
    """megatron-core dataset config over ``shards`` (callers pick which splits get built)."""
    d = config.data
    cfg = MetadataGPTDatasetConfig(
        random_seed=config.training.seed,
        sequence_length=config.model.seq_length,
        blend=([s.prefix for s in shards], None),
        split=split,
        path_to_cache=d.data_cache_path,
        tokenizer=ShardTokenizer(manifest.tokenizer.vocab_size, manifest.tokenizer.eod_id),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,  # causal attention needs no explicit mask
        metadata_token_counts=(
            {s.prefix: s.metadata_tokens for s in shards} if d.mask_metadata_loss else None
        ),
    )
    return cfg


def has_holdout_valid(manifest: Manifest) -> bool:
    return any(h.split == "valid" for h in manifest.holdout)


def train_split(config: RunConfig, manifest: Manifest) -> str:
    """All of the shards when held-out validation documents exist, else ``--split``."""
    return "100,0,0" if has_holdout_valid(manifest) else config.data.split


def build_blend(
    config: RunConfig, manifest: Manifest, shards: Sequence[ShardEntry], num_samples: int
) -> torch.utils.data.Dataset:
    """A dataset of ``num_samples`` sequences blended from ``shards`` (epochs repeat as needed)."""
    cfg = dataset_config(config, manifest, shards, train_split(config, manifest))
    if cfg.split_matrix[0] is None:
        raise ConfigError(f"--split {config.data.split} leaves nothing for training")
    cfg.split_matrix = [cfg.split_matrix[0], None, None]  # build the train split only
    if config.data.region_mix == "interleave" and len(shards) > 1:
        return _interleaved(config, shards, cfg.split_matrix[0], num_samples)
    if config.data.region_mix not in ("blend", "interleave"):
        raise ConfigError(f"--region-mix {config.data.region_mix!r}: choose blend or interleave")
    weights = None if len(shards) == 1 else blend_weights(shards, config.data.region_weights)
    cfg.blend = ([s.prefix for s in shards], weights)
    builder = BlendedMegatronDatasetBuilder(
        MetadataMaskedGPTDataset, [num_samples, 0, 0], lambda: True, cfg
    )
    dataset = builder.build()[0]
    if dataset is None or len(dataset) < num_samples:
        raise DataError(
            f"{manifest.path}: the shards give {0 if dataset is None else len(dataset)} training "
            f"sequences of {config.model.seq_length} tokens, {num_samples} needed"
        )
    return dataset


def _interleaved(config: RunConfig, shards: Sequence[ShardEntry], bounds, num_samples: int):
    from megatron_meta.training.interleave import InterleavedDataset

    if config.data.region_weights is not None:
        raise ConfigError(
            f"--region-weights {config.data.region_weights} with --region-mix interleave: the "
            "interleave takes one document per region a group; drop one of the two flags"
        )
    ranges = [(int(round(bounds[0] * s.documents)), int(round(bounds[1] * s.documents))) for s in shards]
    return InterleavedDataset(shards, ranges, config.training.seed, config.model.seq_length,
                              num_samples, config.data.mask_metadata_loss)


def cooldown_start(config: RunConfig) -> int:
    """First iteration of the no-metadata cooldown (``train_iters`` when there is none)."""
    iters = config.training.train_iters
    return iters - int(round(config.data.metadata_cooldown_fraction * iters))


def build_phases(config: RunConfig, manifest: Manifest) -> List[Phase]:
    """The training phases: the chosen variant, then the optional ``none`` cooldown."""
    d, t = config.data, config.training
    shards = select_shards(manifest, d.variant, d.exclude_regions)
    regions = ", ".join(region_name(s.region) for s in shards)
    split_at = cooldown_start(config)
    phases: List[Phase] = []
    if split_at > 0:
        dataset = build_blend(config, manifest, shards, split_at * t.global_batch_size)
        phases.append(Phase(0, split_at, d.variant, dataset))
        logger.info("data: variant %s, regions %s, iterations 0-%d", d.variant, regions, split_at)
    if split_at < t.train_iters:
        if "none" not in manifest.variants():
            raise ConfigError(
                f"--metadata-cooldown-fraction needs the 'none' variant, which {manifest.path} "
                "lacks; re-run preprocess with --metadata-variants including none"
            )
        cool = select_shards(manifest, "none", d.exclude_regions)
        dataset = build_blend(
            config, manifest, cool, (t.train_iters - split_at) * t.global_batch_size
        )
        phases.append(Phase(split_at, t.train_iters, "none", dataset))
        logger.info("data: metadata cooldown on variant none from iteration %d", split_at)
    return phases


def build_split_validation(
    config: RunConfig, manifest: Manifest
) -> Dict[str, torch.utils.data.Dataset]:
    """Region -> the validation split of its shard (used when there are no held-out documents).

    Every region of the variant is included, excluded ones too: for leave-one-out runs the loss
    on the region left out is the number of interest.
    """
    shards = select_shards(manifest, config.data.variant, [])
    out: Dict[str, torch.utils.data.Dataset] = {}
    for shard in shards:
        cfg = dataset_config(config, manifest, [shard], config.data.split)
        bounds = cfg.split_matrix[1]
        if bounds is None:
            return {}
        indexed = MetadataMaskedGPTDataset.build_low_level_dataset(shard.prefix, cfg)
        n = len(indexed.sequence_lengths)
        beg, end = int(round(bounds[0] * n)), int(round(bounds[1] * n))
        if end <= beg:
            logger.warning("region %s: too few documents for a validation split", shard.region)
            continue
        dataset = BlendedMegatronDatasetBuilder.build_generic_dataset(
            MetadataMaskedGPTDataset,
            lambda: True,
            True,
            indexed,
            shard.prefix,
            np.arange(beg, end, dtype=np.int32),
            None,
            Split.valid,
            cfg,
        )
        out[region_name(shard.region)] = dataset
    return out


# --------------------------------------------------------------------------------------------
# Batches


class _RankBatches(torch.utils.data.Sampler):
    """Index lists of this rank's micro-batches over samples ``[start, end)``."""

    def __init__(self, start: int, end: int, micro_batch: int, dp_size: int, dp_rank: int):
        self.start, self.end = start, end
        self.micro_batch, self.dp_size, self.dp_rank = micro_batch, dp_size, dp_rank

    def __iter__(self) -> Iterator[List[int]]:
        stride = self.micro_batch * self.dp_size
        for block in range(self.start, self.end, stride):
            first = block + self.dp_rank * self.micro_batch
            yield list(range(first, first + self.micro_batch))

    def __len__(self) -> int:
        return (self.end - self.start) // (self.micro_batch * self.dp_size)


def ignore_stop_signals(worker_id: int) -> None:
    """In a data-loader worker: ignore the stop signals the trainer handles. Slurm sends them
    to every process of the step, and torch's workers die of SIGTERM, crashing the trainer
    before it can save; the trainer shuts its workers down itself."""
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)


class TrainBatches:
    """This rank's micro-batches of any iteration; a new loader only on a jump or phase change."""

    def __init__(self, phases: List[Phase], config: RunConfig, dp_size: int, dp_rank: int):
        self.phases = phases
        self.global_batch = config.training.global_batch_size
        self.micro_batch = config.training.micro_batch_size
        self.dp_size, self.dp_rank = dp_size, dp_rank
        self.num_workers = config.data.num_workers
        self.num_micro_batches = self.global_batch // (self.micro_batch * dp_size)
        self._iter: Optional[Iterator] = None
        self._next_iteration = -1

    def phase_of(self, iteration: int) -> Phase:
        for phase in self.phases:
            if phase.start <= iteration < phase.end:
                return phase
        raise IndexError(f"iteration {iteration} is past the planned {self.phases[-1].end}")

    def _open(self, iteration: int) -> None:
        phase = self.phase_of(iteration)
        sampler = _RankBatches(
            (iteration - phase.start) * self.global_batch,
            (phase.end - phase.start) * self.global_batch,
            self.micro_batch,
            self.dp_size,
            self.dp_rank,
        )
        loader = torch.utils.data.DataLoader(
            phase.dataset,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=ignore_stop_signals if self.num_workers else None,
        )
        self._iter = iter(loader)

    def get(self, iteration: int) -> List[Dict[str, torch.Tensor]]:
        """Micro-batches of iteration ``iteration`` (0-based: the step that makes it ``+1``)."""
        return list(self.micro_batches(iteration))

    def micro_batches(self, iteration: int) -> Iterator[Dict[str, torch.Tensor]]:
        """The same micro-batches, pulled one at a time as the model asks for them, so the
        loader's workers prepare the next ones while the model computes (not all of a step's
        micro-batches before its first forward)."""
        if iteration != self._next_iteration or self.phase_of(iteration).start == iteration:
            self._open(iteration)
        self._next_iteration = iteration + 1
        loader = self._iter
        return (next(loader) for _ in range(self.num_micro_batches))
