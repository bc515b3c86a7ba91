"""In one process (a process group of one): the scoring core, crash-safe checkpoint saving,
optimizer state round trip, loading for evaluation, and refusing another model's checkpoint."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from megatron_meta.checkpoints import checkpoint_info
from megatron_meta.checkpoints.load import load_model_for_eval
from megatron_meta.errors import CheckpointError
from megatron_meta.models.scoring import score_sequences
from megatron_meta.models import build_model, get_preset
from megatron_meta.models.presets import with_overrides
from megatron_meta.parallel import destroy_parallel, initialize_parallel
from megatron_meta.training import checkpoint as ckpt
from megatron_meta.training.config import OptimizerConfig
from megatron_meta.training.optimizer import CpuAdamW, set_learning_rate
from megatron_meta.training.trainer import forward_backward

VOCAB, SEQ = 500, 16


@pytest.fixture(scope="module")
def parallel():
    info = initialize_parallel(1, seed=11)
    yield info
    destroy_parallel()


def new_model():
    return build_model(get_preset("tiny"), vocab_size=VOCAB, seq_length=SEQ, tp_size=1)


def wrapped(model):
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig

    return DistributedDataParallel(model.config, DistributedDataParallelConfig(), model)


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(2, VOCAB, (2, SEQ + 1), generator=g)
    return {
        "tokens": text[:, :-1],
        "labels": text[:, 1:],
        "loss_mask": torch.ones(2, SEQ),
        "position_ids": torch.arange(SEQ).expand(2, -1),
    }


def train_steps(model, optimizer, info, seeds):
    set_learning_rate(optimizer, 1e-2, 0.1)
    losses = []
    for s in seeds:
        model.zero_grad_buffer()
        optimizer.zero_grad()
        losses.append(forward_backward(model, [batch(s)], info))
        optimizer.step()
    return losses


def common(preset_name="tiny"):
    return {
        "consumed_samples": 0,
        "model_identity": ckpt.model_identity(get_preset(preset_name), VOCAB),
        "config": {"model": {"seq_length": SEQ}, "training": {"global_batch_size": 2}},
        "layout": {"world_size": 1, "tp": 1, "dp": 1},
        "tokenizer": None,
    }


def test_scoring_matches_a_by_hand_log_softmax(parallel):
    model = new_model()
    rng = np.random.default_rng(0)
    seqs = [rng.integers(2, VOCAB, n).tolist() for n in (9, 17, 4)]
    starts = [3, 1, 2]
    nll, count = score_sequences(model, seqs, starts, micro_batch_size=2)
    assert count.tolist() == [9 - 3, 17 - 1, 4 - 2]
    for seq, start, got in zip(seqs, starts, nll):
        ids = torch.tensor([seq])
        with torch.no_grad():
            logits = model(ids[:, :-1], torch.arange(len(seq) - 1).unsqueeze(0), None)
        # over the padded vocabulary, as megatron-core's loss (and training) normalizes
        logp = torch.log_softmax(logits[0].double(), dim=-1)
        expected = -sum(float(logp[t - 1, seq[t]]) for t in range(start, len(seq)))
        assert got == pytest.approx(expected, rel=1e-5)
    # Truncation: max_length keeps the first tokens only.
    nll_cut, count_cut = score_sequences(model, seqs[1:2], [1], max_length=8)
    assert count_cut.tolist() == [7]


def test_crash_while_saving_keeps_the_previous_checkpoint(parallel, tmp_path, monkeypatch):
    from megatron.core import dist_checkpointing

    root = str(tmp_path / "ckpt")
    model = wrapped(new_model())
    optimizer = CpuAdamW(model, OptimizerConfig())
    train_steps(model, optimizer, parallel, [1, 2])
    ckpt.save_checkpoint(root, 2, model, optimizer, common())
    saved = {k: v.clone() for k, v in model.module.state_dict().items() if "_extra_state" not in k}
    after = train_steps(model, optimizer, parallel, [3, 4])

    real_save = dist_checkpointing.save

    def crash(state, directory, **kwargs):
        with open(os.path.join(directory, "__0_0.distcp"), "wb") as f:
            f.write(b"half a checkpoint")
        raise RuntimeError("node lost power")

    monkeypatch.setattr(dist_checkpointing, "save", crash)
    with pytest.raises(RuntimeError, match="power"):
        ckpt.save_checkpoint(root, 4, model, optimizer, common())
    monkeypatch.setattr(dist_checkpointing, "save", real_save)
    assert open(os.path.join(root, ckpt.TRACKER)).read().strip() == "2"
    assert ckpt.latest_checkpoint(root) == ckpt.iteration_dir(root, 2)
    assert not os.path.exists(ckpt.iteration_dir(root, 4))

    # Resuming from the intact checkpoint restores weights and optimizer state: the same steps
    # give the same losses again, bit for bit.
    fresh = wrapped(new_model())
    fresh_opt = CpuAdamW(fresh, OptimizerConfig())
    loaded = ckpt.load_checkpoint(root, fresh, fresh_opt, common()["model_identity"], True)
    assert loaded.iteration == 2
    for k, v in fresh.module.state_dict().items():
        if k in saved:
            assert torch.equal(v, saved[k]), k
    assert train_steps(fresh, fresh_opt, parallel, [3, 4]) == after

    ckpt.save_checkpoint(root, 4, fresh, fresh_opt, common())  # cleans the crashed attempt
    assert sorted(os.listdir(root)) == sorted([ckpt.TRACKER, "iter_0000002", "iter_0000004"])


def test_load_model_for_eval_and_refusing_another_model(parallel, tmp_path):
    root = str(tmp_path / "ckpt")
    model = wrapped(new_model())
    optimizer = CpuAdamW(model, OptimizerConfig())
    train_steps(model, optimizer, parallel, [5])
    ckpt.save_checkpoint(root, 1, model, optimizer, common())

    eval_model, info = load_model_for_eval(root, tp=1)
    assert (info.iteration, info.vocab_size, info.seq_length) == (1, VOCAB, SEQ)
    assert info.preset == get_preset("tiny")
    seqs, starts = [list(range(2, 14)), list(range(40, 50))], [1, 4]
    expected = score_sequences(model.module, seqs, starts)
    got = score_sequences(eval_model, seqs, starts)
    assert np.allclose(got[0], expected[0]) and (got[1] == expected[1]).all()

    other = ckpt.model_identity(
        with_overrides(get_preset("tiny"), name="tiny-wide", hidden_size=256), VOCAB
    )
    with pytest.raises(
        CheckpointError, match="holds a checkpoint of model 'tiny', not of --model 'tiny-wide'"
    ):
        ckpt.check_identity(
            ckpt.read_common(ckpt.latest_checkpoint(root))["model_identity"], other, "--load x"
        )
    with pytest.raises(CheckpointError, match="vocabulary 500 vs 600"):
        ckpt.check_identity(
            common()["model_identity"], ckpt.model_identity(get_preset("tiny"), 600), "x"
        )
    with pytest.raises(CheckpointError, match="no checkpoint there"):
        checkpoint_info(str(tmp_path))


def test_weight_decay_skips_norms_and_clipping_uses_the_global_norm(parallel):
    from megatron_meta.training.optimizer import grad_norm, parameter_groups

    model = wrapped(new_model())
    decay, no_decay = parameter_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert no_decay["wd_mult"] == 0.0 and decay["wd_mult"] == 1.0
    assert {names[id(p)].rsplit(".", 2)[-2] for p in no_decay["params"]} == {
        "input_layernorm",
        "pre_mlp_layernorm",
        "final_layernorm",
    }
    assert all(p.ndim == 2 for p in decay["params"])

    optimizer = CpuAdamW(model, OptimizerConfig(clip_grad=1e-3))
    set_learning_rate(optimizer, 1e-2, 0.1)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    model.zero_grad_buffer()
    forward_backward(model, [batch(9)], parallel)
    by_hand = float(torch.sqrt(sum(p.main_grad.double().pow(2).sum() for p in model.parameters())))
    _, norm, _ = optimizer.step()
    assert norm == pytest.approx(by_hand, rel=1e-6)
    clipped = float(torch.sqrt(sum(p.grad.double().pow(2).sum() for p in model.parameters())))
    assert clipped == pytest.approx(1e-3, rel=1e-3)  # scaled down to --clip-grad
    assert grad_norm(model.parameters()) == pytest.approx(clipped, rel=1e-6)
