"""Named model presets (Llama-3 family shapes) and their megatron-core ``TransformerConfig``.

Every preset is a Llama-style decoder: RMSNorm, SwiGLU MLP, grouped-query attention, RoPE, no
biases. Each names where its numbers come from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F

from megatron_meta.errors import ConfigError
from megatron_meta.platform import cpu as platform

LLAMA3_VOCAB = 128_256  # Llama-3.2-1B's tokenizer, which the paper trains with


@dataclass(frozen=True)
class ModelPreset:
    """Shape and initialization of one decoder model."""

    name: str
    """Registry key (``--model NAME``)."""
    num_layers: int
    """Transformer layers."""
    hidden_size: int
    """Model width."""
    num_attention_heads: int
    """Query heads."""
    num_query_groups: int
    """Key/value heads (GQA groups); equal to ``num_attention_heads`` for plain multi-head."""
    ffn_hidden_size: int
    """Width of each of the SwiGLU MLP's gate and up projections."""
    vocab_size: int
    """Vocabulary the preset was designed for (the tokenizer's size overrides it at build time)."""
    max_position_embeddings: int
    """Longest sequence the preset is meant for."""
    rotary_base: int
    """RoPE base (theta)."""
    rope_scaling: bool
    """Apply Llama-3.x RoPE frequency scaling."""
    tie_embeddings: bool
    """Share the input embedding with the output layer."""
    init_method_std: float
    """Standard deviation of the normal weight initialization."""
    norm_eps: float
    """RMSNorm epsilon."""
    source: str
    """Where these numbers come from."""
    rope_scaling_factor: float = 8.0
    """Llama-3.x RoPE scaling factor (used when ``rope_scaling``)."""

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


PRESETS: Dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset(
            name="paper-0.5b",
            num_layers=24,
            hidden_size=1024,
            num_attention_heads=16,
            num_query_groups=16,
            ffn_hidden_size=4096,
            vocab_size=LLAMA3_VOCAB,
            max_position_embeddings=2048,
            rotary_base=10_000,
            rope_scaling=False,
            tie_embeddings=False,
            init_method_std=0.025,
            norm_eps=1e-5,
            source="arXiv 2601.15236 authors' launcher, their '410m' shape (FACTS.md s.1); RoPE "
            "base 10000: nanotron's default, which the launcher never overrides (FACTS 1a)",
        ),
        ModelPreset(
            name="paper-1b",
            num_layers=16,
            hidden_size=2048,
            num_attention_heads=16,
            num_query_groups=16,
            ffn_hidden_size=5632,
            vocab_size=LLAMA3_VOCAB,
            max_position_embeddings=2048,
            rotary_base=10_000,
            rope_scaling=False,
            tie_embeddings=False,
            init_method_std=0.025,
            norm_eps=1e-5,
            source="arXiv 2601.15236 authors' launcher, their '1b' shape (FACTS.md s.1); RoPE "
            "base 10000: nanotron's default, which the launcher never overrides (FACTS 1a)",
        ),
        ModelPreset(
            name="llama3.2-1b",
            num_layers=16,
            hidden_size=2048,
            num_attention_heads=32,
            num_query_groups=8,
            ffn_hidden_size=8192,
            vocab_size=LLAMA3_VOCAB,
            max_position_embeddings=131_072,
            rotary_base=500_000,
            rope_scaling=True,
            rope_scaling_factor=32.0,
            tie_embeddings=True,
            init_method_std=0.02,
            norm_eps=1e-5,
            source="https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json",
        ),
        ModelPreset(
            name="smollm2-135m",
            num_layers=30,
            hidden_size=576,
            num_attention_heads=9,
            num_query_groups=3,
            ffn_hidden_size=1536,
            vocab_size=49_152,
            max_position_embeddings=8192,
            rotary_base=100_000,
            rope_scaling=False,
            tie_embeddings=True,
            init_method_std=0.041666666666666664,
            norm_eps=1e-5,
            source="https://huggingface.co/HuggingFaceTB/SmolLM2-135M/blob/main/config.json",
        ),
        ModelPreset(
            name="tiny",
            num_layers=2,
            hidden_size=128,
            num_attention_heads=4,
            num_query_groups=2,
            ffn_hidden_size=352,
            vocab_size=2048,
            max_position_embeddings=1024,
            rotary_base=10_000,
            rope_scaling=False,
            tie_embeddings=False,
            init_method_std=0.02,
            norm_eps=1e-5,
            source="ours: a CPU-sized Llama (GQA 4:2, TP=2 divides heads and groups) for tests "
            "and the demo",
        ),
    )
}


def get_preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"--model {name!r} is not a known preset; choose from {', '.join(PRESETS)}"
        ) from None


@dataclass(frozen=True)
class Kernels:
    """Which CUDA kernels this process can use; every field is False without CUDA."""

    cuda: bool = False
    """CUDA is available."""
    transformer_engine: bool = False
    """The Transformer Engine layer spec is in use (its fused RoPE, cross-entropy and wgrad)."""
    fused_softmax: bool = False
    """megatron's fused softmax extensions import (``scaled_masked_softmax_cuda`` and
    ``scaled_upper_triang_masked_softmax_cuda``, built by apex or Megatron-LM)."""
    fused_wgrad: bool = False
    """apex's ``fused_weight_gradient_mlp_cuda`` imports (gradient accumulation fusion of the
    local linears)."""


_SOFTMAX_MODULES = ("scaled_masked_softmax_cuda", "scaled_upper_triang_masked_softmax_cuda")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def detect_kernels(backend: str) -> Kernels:
    """The kernels of this machine for a layer spec chosen by ``select_backend``."""
    if not platform.cuda_available():
        return Kernels()
    return Kernels(
        cuda=True,
        transformer_engine=backend == "transformer_engine",
        fused_softmax=all(_importable(m) for m in _SOFTMAX_MODULES),
        fused_wgrad=_importable("fused_weight_gradient_mlp_cuda"),
    )


def fusion_fields(kernels: Kernels) -> Dict[str, Any]:
    """``TransformerConfig`` fusion switches for ``kernels``: each on only where its kernel
    exists, so no configuration asks megatron-core for a kernel that is not there.

    * ``persist_layer_norm`` stays off: it only selects apex's persistent LayerNorm kernel, we
      use RMSNorm, and megatron's torch norm (``WrappedTorchNorm``) asserts it is off.
    * ``masked_softmax_fusion`` (megatron core attention) needs the fused softmax extensions: in
      bf16 ``FusedScaleMaskSoftmax`` imports them on the first forward.
    * With Transformer Engine, as Megatron-LM: fused RoPE, TE's vocab-parallel cross-entropy
      (no fp32 copy of the 128k-wide logits per micro-batch) and wgrad accumulation fused into
      the GEMMs (into megatron DDP's ``main_grad``).
    """
    te = kernels.cuda and kernels.transformer_engine
    return dict(
        # On the CPU, weights are built whole and split (the same draws at any TP size).
        use_cpu_initialization=not kernels.cuda,
        bias_activation_fusion=kernels.cuda,  # torch-jit fused SwiGLU: no extension needed
        masked_softmax_fusion=kernels.cuda and kernels.fused_softmax,
        persist_layer_norm=False,
        apply_rope_fusion=te,
        cross_entropy_loss_fusion=te,
        cross_entropy_fusion_impl="te" if te else "native",
        gradient_accumulation_fusion=te or (kernels.cuda and kernels.fused_wgrad),
    )


def transformer_config(
    preset: ModelPreset,
    *,
    tp_size: int,
    bf16: bool,
    seq_length: int,
    kernels: Optional[Kernels] = None,
    **overrides: Any,
):
    """megatron-core ``TransformerConfig`` of a Llama-style decoder for ``preset``.

    ``overrides`` are ``TransformerConfig`` fields set last (e.g. ``recompute_granularity``).
    ``kernels`` (default: :func:`detect_kernels` for the local spec) decides the CUDA fusions.
    """
    from megatron.core.transformer import TransformerConfig

    if seq_length > preset.max_position_embeddings:
        raise ConfigError(
            f"--seq-length {seq_length} exceeds the {preset.name} preset's "
            f"max_position_embeddings={preset.max_position_embeddings}"
        )
    if kernels is None:
        kernels = detect_kernels("local")
    dtype = torch.bfloat16 if bf16 else torch.float32
    fields: Dict[str, Any] = dict(
        num_layers=preset.num_layers,
        hidden_size=preset.hidden_size,
        num_attention_heads=preset.num_attention_heads,
        num_query_groups=preset.num_query_groups,
        ffn_hidden_size=preset.ffn_hidden_size,
        kv_channels=preset.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=preset.norm_eps,
        gated_linear_unit=True,  # SwiGLU: fc1 holds [gate; up]
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=preset.init_method_std,
        tensor_model_parallel_size=tp_size,
        bf16=bf16,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        **fusion_fields(kernels),
    )
    fields.update(overrides)
    try:
        return TransformerConfig(**fields)
    except (TypeError, ValueError, AssertionError) as e:
        raise ConfigError(f"invalid model configuration for {preset.name}: {e}") from e


def with_overrides(preset: ModelPreset, **changes: Any) -> ModelPreset:
    """A copy of ``preset`` with some fields changed (e.g. a different vocabulary)."""
    return dataclasses.replace(preset, **changes)
