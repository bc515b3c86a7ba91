"""Llama-style model presets, their megatron-core build, and their FLOP counts."""

from megatron_meta.models.build import build_model, pad_vocab_size, select_backend
from megatron_meta.models.presets import PRESETS, ModelPreset, get_preset, transformer_config

__all__ = [
    "PRESETS",
    "ModelPreset",
    "build_model",
    "get_preset",
    "pad_vocab_size",
    "select_backend",
    "transformer_config",
]
