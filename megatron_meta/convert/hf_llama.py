"""The Llama state-dict adapter: megatron-core names <-> Hugging Face ``LlamaForCausalLM`` names,
and the model shape <-> ``config.json``.

One table per direction (torchtitan's state-dict adapters are the model). Names on the megatron
side are those of a ``dist_checkpointing`` checkpoint, where per-layer weights are stacked along
a leading layer axis and both layer specs store the norms under Transformer Engine's names; the
local spec's module names are listed too. Two tensors need reshaping, each in a small function:

* ``linear_qkv`` is laid out per query group, ``[q heads of group g; k_g; v_g]`` for g = 0..G-1,
  which HF keeps as three separate projections;
* ``linear_fc1`` is ``[gate; up]`` (in a checkpoint whole, whatever the TP size: megatron-core
  saves the two halves as separate shards of one global tensor), HF keeps ``gate_proj`` and
  ``up_proj``.

RoPE needs no permutation (megatron-core's ``rotary_interleaved=False`` rotates halves, as HF).
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch

from megatron_meta.errors import ConfigError
from megatron_meta.models.presets import ModelPreset

# megatron-core -> HF, tensors outside the layers.
TO_HF_GLOBAL: Dict[str, str] = {
    "embedding.word_embeddings.weight": "model.embed_tokens.weight",
    "decoder.final_layernorm.weight": "model.norm.weight",
    "output_layer.weight": "lm_head.weight",  # absent when embeddings are tied
}
# megatron-core -> HF, per layer (``decoder.layers.{i}.`` -> ``model.layers.{i}.``).
# A tuple value: one megatron tensor holds several HF tensors (see split_qkv / split_fc1).
TO_HF_LAYER: Dict[str, Any] = {
    "self_attention.linear_qkv.layer_norm_weight": "input_layernorm.weight",  # checkpoints, TE
    "input_layernorm.weight": "input_layernorm.weight",  # local spec module
    "self_attention.linear_qkv.weight": (
        "self_attn.q_proj.weight",
        "self_attn.k_proj.weight",
        "self_attn.v_proj.weight",
    ),
    "self_attention.linear_proj.weight": "self_attn.o_proj.weight",
    "mlp.linear_fc1.layer_norm_weight": "post_attention_layernorm.weight",  # checkpoints, TE
    "pre_mlp_layernorm.weight": "post_attention_layernorm.weight",  # local spec module
    "mlp.linear_fc1.weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
    "mlp.linear_fc2.weight": "mlp.down_proj.weight",
}

# HF -> megatron-core (the local spec's module names, which we build to import).
FROM_HF_GLOBAL: Dict[str, str] = {
    "model.embed_tokens.weight": "embedding.word_embeddings.weight",
    "model.norm.weight": "decoder.final_layernorm.weight",
    "lm_head.weight": "output_layer.weight",
}
FROM_HF_LAYER: Dict[Any, str] = {
    "input_layernorm.weight": "input_layernorm.weight",
    ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"): (
        "self_attention.linear_qkv.weight"
    ),
    "self_attn.o_proj.weight": "self_attention.linear_proj.weight",
    "post_attention_layernorm.weight": "pre_mlp_layernorm.weight",
    ("mlp.gate_proj.weight", "mlp.up_proj.weight"): "mlp.linear_fc1.weight",
    "mlp.down_proj.weight": "mlp.linear_fc2.weight",
}
LAYERS_MEGATRON, LAYERS_HF = "decoder.layers.", "model.layers."


# --------------------------------------------------------------------------------------------
# The two reshaped tensors


def split_qkv(qkv: torch.Tensor, preset: ModelPreset) -> Tuple[torch.Tensor, ...]:
    """``linear_qkv`` ``[G * (H/G + 2) * d, hidden]`` -> HF q ``[H*d, hidden]`` and k, v
    ``[G*d, hidden]`` (H query heads, G groups, head width d)."""
    heads, groups, d = preset.num_attention_heads, preset.num_query_groups, preset.head_dim
    per_group = heads // groups
    grouped = qkv.reshape(groups, (per_group + 2) * d, qkv.shape[-1])
    q = grouped[:, : per_group * d].reshape(heads * d, -1)
    k = grouped[:, per_group * d : (per_group + 1) * d].reshape(groups * d, -1)
    v = grouped[:, (per_group + 1) * d :].reshape(groups * d, -1)
    return q, k, v


def merge_qkv(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, preset: ModelPreset
) -> torch.Tensor:
    """The inverse of :func:`split_qkv`."""
    heads, groups, d = preset.num_attention_heads, preset.num_query_groups, preset.head_dim
    hidden = q.shape[-1]
    parts = (
        q.reshape(groups, heads // groups * d, hidden),
        k.reshape(groups, d, hidden),
        v.reshape(groups, d, hidden),
    )
    return torch.cat(parts, dim=1).reshape(-1, hidden)


def split_fc1(fc1: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``linear_fc1`` ``[2 * ffn, hidden]`` = ``[gate; up]`` -> (gate, up)."""
    gate, up = torch.chunk(fc1, 2, dim=0)
    return gate, up


def merge_fc1(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return torch.cat([gate, up], dim=0)


# --------------------------------------------------------------------------------------------
# Shape <-> config.json

# Megatron-core's Llama-3 RoPE scaling has these fixed; HF's config spells them out.
LLAMA3_ROPE = {
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def hf_config(preset: ModelPreset, vocab_size: int, dtype: torch.dtype, bos_id, eos_id):
    """A ``transformers.LlamaConfig`` of ``preset`` (vocabulary without padding)."""
    from transformers import LlamaConfig

    rope: Dict[str, Any] = {"rope_type": "default", "rope_theta": float(preset.rotary_base)}
    if preset.rope_scaling:
        rope.update(rope_type="llama3", factor=float(preset.rope_scaling_factor), **LLAMA3_ROPE)
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=preset.hidden_size,
        intermediate_size=preset.ffn_hidden_size,
        num_hidden_layers=preset.num_layers,
        num_attention_heads=preset.num_attention_heads,
        num_key_value_heads=preset.num_query_groups,
        head_dim=preset.head_dim,
        hidden_act="silu",
        max_position_embeddings=preset.max_position_embeddings,
        initializer_range=preset.init_method_std,
        rms_norm_eps=preset.norm_eps,
        tie_word_embeddings=preset.tie_embeddings,
        rope_parameters=rope,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        architectures=["LlamaForCausalLM"],
        dtype=dtype,
    )


def _refuse(where: str, field: str, value: Any, why: str) -> None:
    raise ConfigError(f"{where}: {field}={value!r} is not supported ({why})")


def preset_from_hf(config: Dict[str, Any], name: str, where: str) -> Tuple[ModelPreset, int]:
    """(shape, vocabulary size) of a Llama-architecture ``config.json`` (as a dict); a shape we
    cannot represent raises ConfigError naming the field."""
    model_type = config.get("model_type")
    if model_type != "llama":
        _refuse(where, "model_type", model_type, "only Llama-architecture models convert")
    for field in ("attention_bias", "mlp_bias"):
        if config.get(field):
            _refuse(where, field, config[field], "megatron-meta's models have no biases")
    if config.get("hidden_act", "silu") != "silu":
        _refuse(where, "hidden_act", config["hidden_act"], "SwiGLU needs silu")
    if config.get("sliding_window"):
        _refuse(where, "sliding_window", config["sliding_window"], "full attention only")
    if config.get("pretraining_tp", 1) != 1:
        _refuse(where, "pretraining_tp", config["pretraining_tp"], "use 1")
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    groups = int(config.get("num_key_value_heads") or heads)
    head_dim = config.get("head_dim") or hidden // heads
    if head_dim * heads != hidden:
        _refuse(where, "head_dim", head_dim, f"must equal hidden_size / num_attention_heads")
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    scaling = rope_type == "llama3"
    if rope_type not in ("default", "llama3"):
        _refuse(where, "rope_type", rope_type, "default or llama3 only")
    if scaling:
        for key, value in LLAMA3_ROPE.items():
            if float(rope.get(key, value)) != float(value):
                _refuse(
                    where, f"rope_parameters.{key}", rope.get(key), f"megatron-core uses {value}"
                )
    preset = ModelPreset(
        name=name,
        num_layers=int(config["num_hidden_layers"]),
        hidden_size=hidden,
        num_attention_heads=heads,
        num_query_groups=groups,
        ffn_hidden_size=int(config["intermediate_size"]),
        vocab_size=int(config["vocab_size"]),
        max_position_embeddings=int(config.get("max_position_embeddings", 2048)),
        rotary_base=int(theta) if float(theta).is_integer() else theta,
        rope_scaling=scaling,
        rope_scaling_factor=float(rope.get("factor", 8.0)),
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        init_method_std=float(config.get("initializer_range", 0.02)),
        norm_eps=float(config.get("rms_norm_eps", 1e-5)),
        source=f"converted from {where}",
    )
    return preset, int(config["vocab_size"])
