"""TP=2 computes what TP=1 computes: logits, per-token losses, gradients, and losses over steps.

Two gloo processes (torch.multiprocessing spawn). Each first builds the `tiny` model at TP=1
(DP=2, both ranks identical), records its weights, logits, losses and gradients and a few SGD
steps, then re-initializes megatron-core at TP=2 in the same process group, loads its shard of the
TP=1 weights (sharded here by hand, following the layouts in FACTS.md section 2) and checks that
everything matches. It also checks that building at TP=2 from the same seed gives exactly those
shards (CPU initialization builds whole weights and splits them).
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

pytestmark = pytest.mark.distributed

SEED = 1234
VOCAB = 1000  # padded to 1024 at TP=1 and TP=2 alike
SEQ = 32
BATCH = 2
STEPS = 3
LR = 0.05


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_dist_env(rank: int, world: int, port: int) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), CUDA_VISIBLE_DEVICES="",
    )
    torch.set_num_threads(1)


def shard_for_tp(full: dict, rank: int, tp: int) -> dict:
    """Rank ``rank``'s TP shard of a TP=1 state dict of the local-spec GPTModel."""
    out = {}
    for name, value in full.items():
        if name.endswith(("word_embeddings.weight", "output_layer.weight")):
            out[name] = value.chunk(tp, 0)[rank]  # vocab-parallel rows
        elif name.endswith("linear_qkv.weight"):
            # Rows are laid out per query group [q heads of g; k_g; v_g]; TP splits the groups.
            out[name] = value.chunk(tp, 0)[rank]
        elif name.endswith("linear_fc1.weight"):
            gate, up = value.chunk(2, 0)  # [gate; up] per shard: chunk each, then concatenate
            out[name] = torch.cat([gate.chunk(tp, 0)[rank], up.chunk(tp, 0)[rank]])
        elif name.endswith(("linear_proj.weight", "linear_fc2.weight")):
            out[name] = value.chunk(tp, 1)[rank]  # row-parallel: input columns
        else:
            out[name] = value  # RMSNorm weights are replicated
    return out


def make_batch():
    g = torch.Generator().manual_seed(7)
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ), generator=g)
    labels = torch.roll(tokens, -1, dims=1)
    position_ids = torch.arange(SEQ).unsqueeze(0).expand(BATCH, -1)
    return tokens, position_ids, labels


def run_model(model, steps: int):
    """Logits, per-token losses and grads of the first step, then the losses of SGD steps."""
    tokens, position_ids, labels = make_batch()
    logits = model(tokens, position_ids, None).detach().clone()
    per_token = model(tokens, position_ids, None, labels=labels)
    per_token.mean().backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    losses = [per_token.mean().item()]
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for _ in range(steps):
        opt.step()
        opt.zero_grad()
        loss = model(tokens, position_ids, None, labels=labels).mean()
        loss.backward()
        losses.append(loss.item())
    return logits, per_token.detach().clone(), grads, losses


def _tp_equivalence_worker(rank: int, world: int, port: int) -> None:
    set_dist_env(rank, world, port)
    import torch.distributed as dist
    from megatron.core import parallel_state

    from megatron_meta.models import build_model, get_preset
    from megatron_meta.parallel import destroy_parallel, initialize_parallel

    preset = get_preset("tiny")
    try:
        initialize_parallel(1, SEED)
        ref = build_model(preset, vocab_size=VOCAB, seq_length=SEQ, tp_size=1)
        full = {k: v.detach().clone() for k, v in ref.state_dict().items() if torch.is_tensor(v)}
        ref_logits, ref_loss, ref_grads, ref_losses = run_model(ref, STEPS)
        del ref
        parallel_state.destroy_model_parallel()

        info = initialize_parallel(2, SEED)
        assert (info.tp_size, info.tp_rank, info.dp_size) == (2, rank, 1)
        model = build_model(preset, vocab_size=VOCAB, seq_length=SEQ, tp_size=2)
        shard = shard_for_tp(full, rank, 2)
        built = {k: v for k, v in model.state_dict().items() if torch.is_tensor(v)}
        assert built.keys() == shard.keys()
        for name, value in shard.items():
            # Same seed, any TP size: the same weights (CPU init splits whole weights).
            assert torch.equal(built[name], value), name
        model.load_state_dict(shard, strict=False)  # so what follows does not rest on the above

        logits, loss, grads, losses = run_model(model, STEPS)
        gathered = [torch.empty_like(logits) for _ in range(2)]
        dist.all_gather(gathered, logits, group=parallel_state.get_tensor_model_parallel_group())
        torch.testing.assert_close(torch.cat(gathered, dim=-1), ref_logits, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
        ref_grad_shards = shard_for_tp(ref_grads, rank, 2)
        assert grads.keys() == ref_grad_shards.keys()
        for name, grad in grads.items():
            assert grad.abs().sum() > 0, name
            torch.testing.assert_close(grad, ref_grad_shards[name], rtol=1e-4, atol=1e-6, msg=name)
        assert ref_losses[-1] < ref_losses[0]  # the steps do train
        torch.testing.assert_close(
            torch.tensor(losses), torch.tensor(ref_losses), rtol=1e-5, atol=1e-6
        )
    finally:
        destroy_parallel()


def test_tp2_matches_tp1_logits_losses_gradients():
    mp.spawn(_tp_equivalence_worker, args=(2, free_port()), nprocs=2, join=True)


def test_shard_for_tp_keeps_fc1_gate_and_up_paired():
    # fc1 rows [g0 g1 g2 g3; u0 u1 u2 u3] -> rank 0 [g0 g1; u0 u1], rank 1 [g2 g3; u2 u3]
    fc1 = torch.arange(8.0).unsqueeze(1)
    full = {"decoder.layers.0.mlp.linear_fc1.weight": fc1}
    name = "decoder.layers.0.mlp.linear_fc1.weight"
    assert shard_for_tp(full, 0, 2)[name].flatten().tolist() == [0, 1, 4, 5]
    assert shard_for_tp(full, 1, 2)[name].flatten().tolist() == [2, 3, 6, 7]
