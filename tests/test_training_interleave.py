"""``--region-mix interleave``: the documents a run reads, and their order, equal an independent
computation of the paper's rule over document ids, for global and leave-one-out mixes."""

from __future__ import annotations

import os
import random

import pytest
import torch
from training_support import EOD, write_shard

from megatron_meta.errors import ConfigError
from megatron_meta.manifest import Manifest, ShardEntry, TokenizerInfo, load_manifest, write_manifest
from megatron_meta.training.config import RunConfig
from megatron_meta.training.data import build_blend
from megatron_meta.training.shards import select_shards

SIZES = {"America": 6, "Asia": 9, "Europe": 5, "Africa": 7}  # not in the authors' order on purpose
SEQ = 16


def doc_id(region: str, i: int) -> int:
    return 200 + 50 * sorted(SIZES).index(region) + i


def document(region: str, i: int):
    # first token: the document's id; then a body of varying length; EOD last
    return [doc_id(region, i)] + [600 + (i * 7 + k) % 90 for k in range(5 + (i * 3) % 11)] + [EOD]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("interleave"))
    shards = []
    for region, n in SIZES.items():
        docs = [document(region, i) for i in range(n)]
        prefix = os.path.join(folder, f"c_full_{region.lower()}")
        sidecar = write_shard(prefix, docs, [1] * n)
        shards.append(ShardEntry(prefix, "full", region, n, sum(map(len, docs)), sidecar))
    path = os.path.join(folder, "c.manifest.json")
    write_manifest(Manifest(TokenizerInfo("NullTokenizer", "", 1000, EOD), shards, [], {}, ["t"],
                            split_by="continent"), path)
    return load_manifest(path)


def expected_stream(regions, seed):
    """The rule, written out independently: authors' region order, one document each per group,
    the group shuffled with random.seed(seed), groups up to the smallest region."""
    order = [r for r in ("Africa", "Asia", "Europe", "America") if r in regions]
    rng = random.Random(seed)
    ids = []
    for g in range(min(SIZES[r] for r in regions)):
        group = [(r, g) for r in order]
        rng.shuffle(group)
        ids += group
    return ids, [t for r, g in ids for t in document(r, g)]


def config_for(manifest, seed, exclude=()):
    config = RunConfig()
    config.model.seq_length = SEQ
    config.training.seed = seed
    config.data.manifest = manifest.path
    config.data.split = "100,0,0"
    config.data.region_mix = "interleave"
    config.data.exclude_regions = list(exclude)
    return config


def read_stream(dataset, samples):
    items = [dataset[i] for i in range(samples)]
    for item in items:
        assert torch.equal(item["tokens"][1:], item["labels"][:-1])
        assert bool((item["loss_mask"] == 1).all())
    return [int(t) for item in items for t in item["tokens"]] + [int(items[-1]["labels"][-1])]


@pytest.mark.parametrize("exclude, seed", [((), 42), ((), 7), (("Europe",), 42), (("Africa",), 3)])
def test_interleave_reads_exactly_the_rule_s_documents_in_order(manifest, exclude, seed):
    regions = [r for r in SIZES if r not in exclude]
    ids, stream = expected_stream(regions, seed)
    per_pass = (len(stream) - 1) // SEQ
    config = config_for(manifest, seed, exclude)
    shards = select_shards(manifest, "full", list(exclude))
    dataset = build_blend(config, manifest, shards, per_pass + 2)
    seen = read_stream(dataset, per_pass)
    assert seen == stream[:per_pass * SEQ + 1]
    # the documents, by id: every group complete, nothing of the larger regions past the smallest
    firsts = [seen[0]] + [seen[k + 1] for k in range(len(seen) - 1) if seen[k] == EOD]
    assert firsts[:len(ids)] == [doc_id(r, g) for r, g in ids][:len(firsts)]
    assert len(ids) == len(regions) * min(SIZES[r] for r in regions)
    # past the end of the stream the run starts it again
    assert torch.equal(dataset[per_pass]["tokens"], dataset[0]["tokens"])


def test_interleave_refuses_region_weights(manifest):
    config = config_for(manifest, 42)
    config.data.region_weights = "balanced"
    with pytest.raises(ConfigError, match="--region-weights balanced with --region-mix interleave"):
        build_blend(config, manifest, select_shards(manifest, "full", []), 4)


def test_metadata_mask_under_interleave(manifest):
    config = config_for(manifest, 42)
    config.data.mask_metadata_loss = True  # each crafted document's first token is "metadata"
    dataset = build_blend(config, manifest, select_shards(manifest, "full", []), 3)
    item = dataset[0]
    ids, stream = expected_stream(list(SIZES), 42)
    starts = {0}
    for k, t in enumerate(stream):
        if t == EOD:
            starts.add(k + 1)
    expected = torch.tensor([0.0 if k + 1 in starts else 1.0 for k in range(SEQ)])
    assert torch.equal(item["loss_mask"], expected)
