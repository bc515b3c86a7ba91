"""The FLOP count and MFU, against a hand count written out term by term."""

from __future__ import annotations

import pytest

from megatron_meta.models.flops import (
    PEAK_BF16_FLOPS,
    flops_per_iteration,
    flops_per_token,
    forward_flops_per_token,
    match_device,
    mfu,
    peak_flops,
)
from megatron_meta.models.presets import get_preset, with_overrides

# A small GQA config: 2 layers, h=64, 4 heads of 16 (q=64), 2 KV heads (kv=32), FFN 160.
SMALL = with_overrides(
    get_preset("tiny"), num_layers=2, hidden_size=64, num_attention_heads=4, num_query_groups=2,
    ffn_hidden_size=160,
)
SEQ, VOCAB = 32, 256


def test_hand_count_small_config():
    # Per layer, per token, forward (2 FLOPs per multiply-add):
    qkv = 2 * 64 * (64 + 2 * 32)  # 16384: [h] x [h, q + 2kv]
    scores = 2 * 64 * 32 // 2  # 2048: Q.K^T against 32 keys, causal half
    attn_v = 2 * 64 * 32 // 2  # 2048: probs.V, causal half
    proj = 2 * 64 * 64  # 8192: [q] x [q, h]
    mlp = 2 * 64 * 160 * 2 + 2 * 160 * 64  # 61440: gate and up [h, f], down [f, h]
    per_layer = qkv + scores + attn_v + proj + mlp
    assert per_layer == 90112
    head = 2 * 64 * 256  # 32768: LM head [h] x [h, V]
    forward = 2 * per_layer + head
    assert forward == 212992
    assert forward_flops_per_token(SMALL, SEQ, VOCAB) == forward
    assert flops_per_token(SMALL, SEQ, VOCAB) == 3 * forward == 638976  # fwd + bwd (2x fwd)
    assert flops_per_iteration(SMALL, SEQ, VOCAB, global_batch_size=8) == 638976 * SEQ * 8


def test_mha_without_gqa_and_longer_sequence():
    mha = with_overrides(SMALL, num_query_groups=4)
    # kv grows from 32 to 64: QKV adds 2 * 64 * 64 per layer.
    base = forward_flops_per_token(SMALL, SEQ, VOCAB)
    assert forward_flops_per_token(mha, SEQ, VOCAB) - base == 2 * 2 * 64 * 64
    # Doubling the sequence adds 2 * q * s (both attention matmuls, causal) per layer.
    assert forward_flops_per_token(SMALL, 2 * SEQ, VOCAB) - base == 2 * (2 * 64 * SEQ)


def test_paper_1b_is_about_6n_plus_attention():
    p = get_preset("paper-1b")
    n_matmul = 16 * (4 * 2048**2 + 3 * 2048 * 5632) + 2048 * 128_256  # layers + untied head
    attention = 3 * 16 * 2 * 2048 * 2048
    assert flops_per_token(p, 2048, 128_256) == 6 * n_matmul + attention  # ~6.9 GFLOP per token


def test_mfu():
    fpt = flops_per_token(SMALL, SEQ, VOCAB)
    assert mfu(1000.0, SMALL, SEQ, VOCAB, peak=fpt * 4000.0) == pytest.approx(0.25)
    assert mfu(1000.0, SMALL, SEQ, VOCAB, peak=None) is None


@pytest.mark.parametrize(
    "name, key",
    [("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"),
     ("NVIDIA H100 NVL", "H100 NVL"), ("NVIDIA A100-SXM4-80GB", "A100"),
     ("NVIDIA A100-PCIE-40GB", "A100"), ("NVIDIA H200", "H200"), ("NVIDIA GH200 480GB", "GH200"),
     ("NVIDIA L40S", "L40S"), ("NVIDIA L4", "L4"), ("NVIDIA B200", "B200"),
     # were mismatched by substring: H200 NVL -> H200, L40 -> L4, H800 PCIe -> H800 (SXM)
     ("NVIDIA H200 NVL", "H200 NVL"), ("NVIDIA L40", "L40"), ("NVIDIA H800 PCIe", "H800 PCIe")],
)
def test_device_table(name, key):
    assert match_device(name) == key
    assert peak_flops(name) == PEAK_BF16_FLOPS[key]


def test_peak_flops_cpu_unknown_and_override():
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("Some Other Accelerator") is None
    assert peak_flops("NVIDIA A100-SXM4-80GB", override=1e15) == 1e15
    assert peak_flops(None) is None  # this machine has no CUDA
    with pytest.raises(ValueError):
        peak_flops(None, override=0)
