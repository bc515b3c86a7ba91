"""Training data: metadata loss masking, region blends, leave-one-out, cooldown, batch layout.

Real megatron-core datasets over real ``.bin/.idx`` shards written by ``IndexedDatasetBuilder``
(see ``training_support``); no process group is needed to build them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from training_support import REGIONS, is_metadata_token, region_of_token, write_corpus

from megatron_meta.errors import ConfigError
from megatron_meta.manifest import load_manifest
from megatron_meta.training.config import RunConfig
from megatron_meta.training.data import Phase, TrainBatches, build_phases
from megatron_meta.training.shards import blend_weights, select_shards


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return load_manifest(write_corpus(str(tmp_path_factory.mktemp("corpus")), docs_per_region=30))


def make_config(manifest, **data) -> RunConfig:
    config = RunConfig()
    config.model.seq_length = 32
    config.training.micro_batch_size = 2
    config.training.global_batch_size = 8
    config.training.train_iters = 8
    config.training.seed = 3
    config.data.manifest = manifest.path
    for key, value in data.items():
        setattr(config.data, key, value)
    return config


def all_samples(dataset):
    return [dataset[i] for i in range(len(dataset))]


def test_metadata_loss_mask_zeroes_exactly_the_metadata_labels(manifest):
    masked = build_phases(make_config(manifest, mask_metadata_loss=True), manifest)[0].dataset
    plain = build_phases(make_config(manifest), manifest)[0].dataset
    metadata_labels = 0
    for a, b in zip(all_samples(masked), all_samples(plain)):
        assert torch.equal(a["tokens"], b["tokens"]) and torch.equal(a["labels"], b["labels"])
        expected_meta = torch.tensor([is_metadata_token(int(t)) for t in a["labels"]])
        # Without masking every label counts (the crafted shards have no padding sample).
        assert bool((b["loss_mask"] == 1).all())
        assert torch.equal(a["loss_mask"] == 0, expected_meta)
        metadata_labels += int(expected_meta.sum())
    assert metadata_labels > 50  # the samples really cross metadata


def test_leave_one_out_blend_has_no_document_of_the_excluded_region(manifest):
    config = make_config(manifest, exclude_regions=["asia"])  # case-insensitive
    dataset = build_phases(config, manifest)[0].dataset
    regions = set()
    for sample in all_samples(dataset):
        regions |= {region_of_token(int(t)) for t in sample["tokens"]} - {None}
    assert regions == {REGIONS.index("Africa"), REGIONS.index("Europe")}


def test_region_weights_set_the_blend_proportions(manifest):
    config = make_config(manifest, exclude_regions=["Asia"], region_weights="Africa=3,Europe=1")
    config.training.train_iters = 50
    dataset = build_phases(config, manifest)[0].dataset
    counts = np.bincount(np.asarray(dataset.dataset_index), minlength=2)
    assert counts.sum() == 400 and abs(counts[0] - 300) <= 2 and abs(counts[1] - 100) <= 2

    shards = select_shards(manifest, "full", [])
    balanced = blend_weights(shards, "balanced")
    assert np.allclose(balanced, [1 / 3] * 3)
    by_size = blend_weights(shards, None)
    assert np.allclose(
        by_size, np.array([s.tokens for s in shards]) / sum(s.tokens for s in shards)
    )


@pytest.mark.parametrize(
    "data, message",
    [
        ({"variant": "url_only"}, "--variant url_only"),
        ({"exclude_regions": ["Oceania"]}, "not a region"),
        ({"exclude_regions": list(REGIONS)}, "leaves no region"),
        ({"region_weights": "Africa=1"}, "no weight for Asia, Europe"),
    ],
)
def test_bad_data_choices_name_the_flag(manifest, data, message):
    with pytest.raises(ConfigError, match=message):
        build_phases(make_config(manifest, **data), manifest)


def test_metadata_cooldown_switches_to_the_none_variant(manifest):
    config = make_config(manifest, metadata_cooldown_fraction=0.25)
    phases = build_phases(config, manifest)
    assert [(p.start, p.end, p.variant) for p in phases] == [(0, 6, "full"), (6, 8, "none")]
    assert len(phases[1].dataset) >= 2 * 8
    for sample in all_samples(phases[1].dataset):
        assert not any(is_metadata_token(int(t)) for t in sample["tokens"])
    assert any(
        is_metadata_token(int(t)) for s in all_samples(phases[0].dataset) for t in s["tokens"]
    )


class _Ids(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"id": torch.tensor(i)}


def _ids(batches):
    return [int(i) for mb in batches for i in mb["id"]]


def test_data_parallel_ranks_split_each_global_batch_and_resume_anywhere():
    config = RunConfig()
    config.training.global_batch_size, config.training.micro_batch_size = 8, 2
    config.data.num_workers = 0
    phases = [Phase(0, 3, "full", _Ids(24)), Phase(3, 5, "none", _Ids(16))]
    single = TrainBatches(phases, config, dp_size=1, dp_rank=0)
    ranks = [TrainBatches(phases, config, dp_size=2, dp_rank=r) for r in (0, 1)]
    for it in range(5):
        expected = _ids(single.get(it))
        assert len(expected) == 8
        shares = [_ids(r.get(it)) for r in ranks]
        assert sorted(shares[0] + shares[1]) == sorted(expected)
        assert not set(shares[0]) & set(shares[1])
        # Resuming at this iteration (a fresh object) reads the same samples.
        assert _ids(TrainBatches(phases, config, 1, 0).get(it)) == expected
    assert _ids(single.get(3)) == list(range(8))  # the cooldown phase starts at its own sample 0
