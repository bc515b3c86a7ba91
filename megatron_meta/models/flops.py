"""Training FLOPs of a Llama-style decoder and model FLOPs utilization (MFU).

Counted per token of a sequence of length ``s``, with ``h`` the hidden size, ``L`` layers,
``q = heads * head_dim``, ``kv = kv_heads * head_dim``, ``f`` the FFN width and ``V`` the
vocabulary (pass the padded size: those logits are computed). A matmul of an ``m``-vector by an
``m x n`` matrix is ``2mn`` FLOPs (multiply + add). Forward, per layer:

====================  =====================  ==========================================
term                  FLOPs per token        why
====================  =====================  ==========================================
QKV projection        2 h (q + 2 kv)         GQA: keys and values have ``kv`` columns
attention scores      q s                    2 q s for Q.K^T over s keys, halved: causal
attention over V      q s                    likewise for probs.V
output projection     2 q h
SwiGLU MLP            6 h f                  three matmuls: gate, up (h->f), down (f->h)
====================  =====================  ==========================================

plus, once, the LM head ``2 h V`` (the embedding lookup costs no FLOPs; norms, softmax, RoPE and
activations are elementwise and left out, as Megatron-LM and the PaLM MFU convention do).
Training costs 3x the forward: the backward computes gradients of both inputs and weights.
"""

from __future__ import annotations

import logging
import re
from typing import Dict, List, Optional, Tuple

import torch

from megatron_meta.models.presets import ModelPreset

logger = logging.getLogger(__name__)

# Dense (no sparsity) BF16 tensor-core peak per GPU, FLOP/s, from the vendors' datasheets.
PEAK_BF16_FLOPS: Dict[str, float] = {
    "A100": 312e12,
    "A800": 312e12,
    "H100 SXM": 989.4e12,
    "H100 PCIe": 756.5e12,
    "H100 NVL": 835.5e12,
    "H800": 989.4e12,
    "H800 PCIe": 756.5e12,
    "H200": 989.4e12,
    "H200 NVL": 835.5e12,
    "GH200": 989.4e12,
    "B200": 2250e12,
    "L40S": 362.05e12,
    "L40": 181.05e12,
    "L4": 121e12,
}

# (model name in torch.cuda.get_device_name(), table key), most specific first. A name matches
# as a whole word ("L4" is not in "L40", "H200" not in "GH200").
_NAME_PATTERNS: List[Tuple[str, str]] = [
    ("GH200", "GH200"),
    ("H200 NVL", "H200 NVL"),
    ("H200", "H200"),
    ("H100 PCIE", "H100 PCIe"),
    ("H100 NVL", "H100 NVL"),
    ("H100", "H100 SXM"),  # "NVIDIA H100 80GB HBM3" is the SXM part
    ("H800 PCIE", "H800 PCIe"),
    ("H800", "H800"),
    ("A100", "A100"),
    ("A800", "A800"),
    ("B200", "B200"),
    ("L40S", "L40S"),
    ("L40", "L40"),
    ("L4", "L4"),
]


def forward_flops_per_token(preset: ModelPreset, seq_length: int, vocab_size: int) -> float:
    """Forward FLOPs per token (see the module docstring for the count)."""
    h, f, s = preset.hidden_size, preset.ffn_hidden_size, seq_length
    q = preset.num_attention_heads * preset.head_dim
    kv = preset.num_query_groups * preset.head_dim
    per_layer = (
        2 * h * (q + 2 * kv)  # QKV projection
        + 2 * q * s / 2  # Q.K^T, causal: half the scores
        + 2 * q * s / 2  # probs.V, causal
        + 2 * q * h  # output projection
        + 3 * 2 * h * f  # SwiGLU: gate, up, down
    )
    return float(preset.num_layers * per_layer + 2 * h * vocab_size)


def flops_per_token(preset: ModelPreset, seq_length: int, vocab_size: int) -> float:
    """Training FLOPs per token: forward + backward = 3x forward."""
    return 3.0 * forward_flops_per_token(preset, seq_length, vocab_size)


def flops_per_iteration(
    preset: ModelPreset, seq_length: int, vocab_size: int, global_batch_size: int
) -> float:
    """Training FLOPs of one optimizer step over ``global_batch_size`` sequences."""
    return flops_per_token(preset, seq_length, vocab_size) * seq_length * global_batch_size


def match_device(device_name: str) -> Optional[str]:
    """The table key for a CUDA device name, or None if it is not in the table."""
    upper = device_name.upper()
    for pattern, key in _NAME_PATTERNS:
        if re.search(rf"(?<![A-Z0-9]){re.escape(pattern)}(?![A-Z0-9])", upper):
            return key
    return None


def peak_flops(
    device_name: Optional[str] = None, override: Optional[float] = None
) -> Optional[float]:
    """Peak BF16 FLOP/s of one device: ``override`` if given, else the table entry for
    ``device_name`` (default: the current CUDA device). None on the CPU or an unknown GPU."""
    if override is not None:
        if override <= 0:
            raise ValueError(f"peak FLOP/s override must be positive, got {override}")
        return float(override)
    if device_name is None:
        if not torch.cuda.is_available():
            return None
        device_name = torch.cuda.get_device_name()
    key = match_device(device_name)
    if key is None:
        logger.warning(
            "no peak FLOP/s known for %r: MFU not reported (give --peak-flops)", device_name
        )
        return None
    return PEAK_BF16_FLOPS[key]


def mfu(
    tokens_per_s_per_gpu: float,
    preset: ModelPreset,
    seq_length: int,
    vocab_size: int,
    peak: Optional[float],
) -> Optional[float]:
    """Model FLOPs utilization: achieved training FLOP/s per device over its peak."""
    if peak is None:
        return None
    return tokens_per_s_per_gpu * flops_per_token(preset, seq_length, vocab_size) / peak
