"""Validation loss per region during training.

Two sources, chosen by what the manifest has:

* **Held-out documents** (preprocessing's ``--holdout-valid-fraction``, the manifest's ``valid``
  JSONL files): each document is formatted in the training variant, tokenized with the manifest's
  tokenizer and scored by the shared scoring core, with the loss counted from the ``TITLE:``
  token on, exactly as ``megatron-meta evaluate`` does. Runs with and without metadata are thus
  compared on the same tokens.
* **Otherwise, a split of the shards** (``--split``, default 98,2,0, Megatron-LM's rule): the
  validation split of each region's shard is read as packed sequences and scored with the same
  loss mask as training. Those documents are never trained on.

Every region of the variant is validated, also regions left out with ``--exclude-regions``.
``--eval-iters`` micro-batches per data-parallel rank and region are scored; the sums are reduced
over the data-parallel group, so the losses are the same on every rank.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import torch
import torch.distributed as dist

from megatron_meta.models.scoring import score_sequences
from megatron_meta.manifest import Manifest
from megatron_meta.training.config import RunConfig
from megatron_meta.training.data import build_split_validation, has_holdout_valid
from megatron_meta.training.shards import region_name

logger = logging.getLogger(__name__)


@dataclass
class ValidationSets:
    """This rank's share of the validation data, by region."""

    documents: Dict[str, Tuple[List[List[int]], List[int]]] = field(default_factory=dict)
    """Region -> (token sequences, loss start per sequence) from held-out documents."""
    packed: Dict[str, List[Dict[str, torch.Tensor]]] = field(default_factory=dict)
    """Region -> micro-batches of packed sequences from the shards' validation split."""

    def regions(self) -> List[str]:
        return sorted(set(self.documents) | set(self.packed))


def _held_out_documents(
    config: RunConfig, manifest: Manifest, per_region: int, dp_size: int, dp_rank: int
) -> Dict[str, Tuple[List[List[int]], List[int]]]:
    # The evaluation CLI's own encoding: [EOD] + ids, scored from the TITLE: token on.
    from megatron_meta.corpora.records import read_documents
    from megatron_meta.tokenizer.documents import Codec, encode_variants
    from megatron_meta.tokenizer import load_tokenizer

    codec = Codec.of(load_tokenizer(manifest.tokenizer.type, manifest.tokenizer.model))
    if manifest.prepend_bos and manifest.tokenizer.bos_id is not None:
        # shards written with --prepend-bos start each document with BOS, not after an EOD
        codec = dataclasses.replace(codec, eod=manifest.tokenizer.bos_id)
    variant = config.data.variant
    docs_by_region: Dict[str, list] = {}
    for entry in manifest.holdout:
        if entry.split == "valid":
            docs_by_region.setdefault(region_name(entry.region), []).extend(
                read_documents(entry.path)
            )
    out: Dict[str, Tuple[List[List[int]], List[int]]] = {}
    for region, docs in docs_by_region.items():
        seqs, starts = out.setdefault(region, ([], []))
        for doc in docs[:per_region][dp_rank::dp_size]:
            encoded = encode_variants(
                doc, [variant], manifest.url_form, codec, config.model.seq_length
            )
            if encoded is not None:
                seqs.append(encoded[variant].sequence)
                starts.append(encoded[variant].start)
    return out


def _packed_batches(
    config: RunConfig, manifest: Manifest, per_region: int, dp_size: int, dp_rank: int
) -> Dict[str, List[Dict[str, torch.Tensor]]]:
    mbs = config.training.micro_batch_size
    out: Dict[str, List[Dict[str, torch.Tensor]]] = {}
    for region, dataset in build_split_validation(config, manifest).items():
        indices = list(range(min(per_region, len(dataset))))[dp_rank::dp_size]
        samples = [dataset[i] for i in indices]
        out[region] = [
            torch.utils.data.default_collate(samples[i : i + mbs])
            for i in range(0, len(samples), mbs)
        ]
    return out


def build_validation(
    config: RunConfig, manifest: Manifest, dp_size: int, dp_rank: int
) -> ValidationSets:
    """Load (and tokenize) this rank's validation data once, before training starts."""
    per_region = config.training.eval_iters * config.training.micro_batch_size * dp_size
    if has_holdout_valid(manifest):
        sets = ValidationSets(
            documents=_held_out_documents(config, manifest, per_region, dp_size, dp_rank)
        )
        source = "held-out documents, loss from TITLE:"
    else:
        sets = ValidationSets(
            packed=_packed_batches(config, manifest, per_region, dp_size, dp_rank)
        )
        source = f"--split {config.data.split} of the shards"
    logger.info("validation: %s, regions %s", source, ", ".join(sets.regions()) or "none")
    return sets


@torch.no_grad()
def _packed_sums(
    model: torch.nn.Module, batches: List[Dict[str, torch.Tensor]], device
) -> Tuple[float, float]:
    nll, count = 0.0, 0.0
    for batch in batches:
        tokens = batch["tokens"].to(device)
        mask = batch["loss_mask"].to(device)
        per_token = model(
            tokens, batch["position_ids"].to(device), None, labels=batch["labels"].to(device)
        )
        nll += float((per_token.float() * mask).sum())
        count += float(mask.sum())
    return nll, count


def validation_losses(
    model: torch.nn.Module,
    sets: ValidationSets,
    micro_batch_size: int,
    device: torch.device,
    dp_group=None,
) -> Dict[str, float]:
    """Mean loss per region (collective over all ranks: call it on every rank)."""
    was_training = model.training
    model.eval()
    losses: Dict[str, float] = {}
    try:
        for region in sets.regions():
            nll, count = 0.0, 0.0
            if region in sets.documents:
                seqs, starts = sets.documents[region]
                if seqs:
                    per_doc_nll, per_doc_count = score_sequences(
                        model, seqs, starts, micro_batch_size=micro_batch_size
                    )
                    nll, count = float(per_doc_nll.sum()), float(per_doc_count.sum())
            else:
                nll, count = _packed_sums(model, sets.packed[region], device)
            sums = torch.tensor([nll, count], dtype=torch.float64, device=device)
            dist.all_reduce(sums, group=dp_group)
            if sums[1] > 0:
                losses[region] = float(sums[0] / sums[1])
    finally:
        model.train(was_training)
    return losses
