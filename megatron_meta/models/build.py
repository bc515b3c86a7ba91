"""Build a megatron-core ``GPTModel`` from a preset, with the layer spec the machine supports."""

from __future__ import annotations

import importlib.util
import logging
import math
from typing import Any, Optional

import torch

from megatron_meta.errors import ConfigError
from megatron_meta.models.presets import ModelPreset, detect_kernels, transformer_config
from megatron_meta.platform import cpu as platform

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "transformer_engine", "local")


def _transformer_engine_importable() -> bool:
    # Only asked when CUDA is present, so a CPU process never imports Transformer Engine.
    if importlib.util.find_spec("transformer_engine") is None:
        return False
    try:
        import transformer_engine.pytorch  # noqa: F401
    except Exception as e:  # a broken TE install (CUDA mismatch) should fall back, loudly
        logger.warning("transformer_engine is installed but does not import (%s)", e)
        return False
    return True


def select_backend(requested: str = "auto") -> str:
    """``"transformer_engine"`` when TE imports and CUDA is available, else ``"local"``."""
    if requested not in BACKENDS:
        raise ConfigError(f"--transformer-impl {requested!r}: choose from {', '.join(BACKENDS)}")
    has_cuda = platform.cuda_available()
    if requested == "local":
        choice, why = "local", "requested"
    elif requested == "transformer_engine":
        if not has_cuda:
            raise ConfigError("--transformer-impl transformer_engine needs CUDA; use local")
        if not _transformer_engine_importable():
            raise ConfigError(
                "--transformer-impl transformer_engine: transformer_engine does not import; "
                "pip install -e '.[gpu]' or use local"
            )
        choice, why = "transformer_engine", "requested"
    elif not has_cuda:
        choice, why = "local", "no CUDA"
    elif _transformer_engine_importable():
        choice, why = "transformer_engine", "CUDA and transformer_engine present"
    else:
        choice, why = "local", "CUDA present but transformer_engine missing"
    logger.info("layer spec: %s (%s)", choice, why)
    return choice


CORE_ATTENTION = ("sdpa", "megatron")


def layer_spec(backend: str, core_attention: str = "sdpa"):
    """The megatron-core layer spec of a Llama layer for a backend chosen by select_backend.

    With the local backend, ``core_attention="sdpa"`` (default) swaps megatron's unfused
    ``DotProductAttention`` for :class:`~megatron_meta.models.attention.SDPACoreAttention`
    (torch's fused kernel, as Hugging Face uses); ``"megatron"`` keeps megatron's own.
    """
    from megatron.core.models.gpt import gpt_layer_specs

    if core_attention not in CORE_ATTENTION:
        raise ConfigError(f"core attention {core_attention!r}: choose from {CORE_ATTENTION}")
    if backend == "transformer_engine":
        return gpt_layer_specs.get_gpt_layer_with_transformer_engine_spec()
    spec = gpt_layer_specs.get_gpt_layer_local_spec(normalization="RMSNorm")
    if core_attention == "sdpa":
        from megatron_meta.models.attention import SDPACoreAttention

        spec.submodules.self_attention.submodules.core_attention = SDPACoreAttention
    return spec


def block_spec(layer: Any, num_layers: int, backend: str):
    """The decoder block of ``num_layers`` copies of ``layer``, with the final norm named.

    Given a bare layer spec, megatron-core's ``TransformerBlock`` picks the final norm from what
    is installed (TE's, else apex's ``FusedLayerNorm``, which asserts LayerNorm and so crashes
    on our RMSNorm, else torch's). The local spec gets torch's RMSNorm, as its other norms.
    """
    from megatron.core.transformer.transformer_block import TransformerBlockSubmodules

    if backend == "transformer_engine":
        return layer  # TENorm: RMSNorm-capable
    from megatron.core.transformer.torch_norm import WrappedTorchNorm

    return TransformerBlockSubmodules(layer_specs=[layer] * num_layers, layer_norm=WrappedTorchNorm)


def pad_vocab_size(vocab_size: int, tp_size: int, multiple: int = 128) -> int:
    """Pad the vocabulary to a multiple of ``lcm(multiple, tp_size)``.

    Megatron-LM pads to ``multiple * tp_size``, which makes the embedding shape depend on the TP
    size (128,256 becomes 128,512 at TP=4) and a checkpoint then cannot be loaded at another TP
    size. With the least common multiple the padded size is the same for every power-of-two TP
    size up to ``multiple``, and each TP shard still gets an equal slice.
    """
    if vocab_size < 1:
        raise ConfigError(f"vocabulary size {vocab_size} must be positive")
    step = math.lcm(multiple, tp_size)
    return -(-vocab_size // step) * step


def mask_padded_vocabulary(model, vocab_size: int) -> None:
    """Give the padding rows of the output layer a logit of -inf.

    Without this they take part in the softmax (as in Megatron-LM), so the model's loss depends
    on rows that a converted model (vocabulary trimmed) does not have, and generation could pick
    an id no tokenizer knows. Works on each TP rank's slice of the vocabulary.
    """
    from megatron.core import parallel_state

    if not getattr(model, "post_process", False):
        return

    def hook(module, inputs, output):
        logits, bias = output
        width = logits.shape[-1]
        first = parallel_state.get_tensor_model_parallel_rank() * width
        if first + width <= vocab_size:
            return None
        keep = torch.arange(first, first + width, device=logits.device) < vocab_size
        return logits.masked_fill(~keep, float("-inf")), bias

    model.output_layer.register_forward_hook(hook)


def build_model(
    preset: ModelPreset,
    *,
    vocab_size: int,
    seq_length: int,
    tp_size: int,
    backend: str = "auto",
    bf16: Optional[bool] = None,
    core_attention: str = "sdpa",
    init_weights: bool = True,
    padded_vocab_size: Optional[int] = None,
):
    """A ``GPTModel`` for ``preset`` on this rank's device; call after ``initialize_parallel``.

    ``vocab_size`` is the tokenizer's; the embedding is padded with :func:`pad_vocab_size`.
    ``bf16`` defaults to True on GPU and False (fp32) on the CPU; with bf16 the parameters are
    bf16 (megatron's mixed-precision optimizer keeps fp32 main weights). Embeddings are tied only
    if the preset says so. ``core_attention`` applies to the local backend (see :func:`layer_spec`).
    ``init_weights=False`` skips the random initialization (weights about to be loaded).
    ``padded_vocab_size`` overrides the padding (a model converted for another TP size).
    """
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel

    if not parallel_state.model_parallel_is_initialized():
        raise RuntimeError("build_model() needs megatron_meta.parallel.initialize_parallel() first")
    if parallel_state.get_tensor_model_parallel_world_size() != tp_size:
        raise ConfigError(
            f"tp_size={tp_size} but megatron-core was initialized with TP="
            f"{parallel_state.get_tensor_model_parallel_world_size()}"
        )
    platform.apply_cpu_accommodations()
    on_gpu = platform.cuda_available()
    if bf16 is None:
        bf16 = on_gpu
    chosen = select_backend(backend)
    config = transformer_config(
        preset,
        tp_size=tp_size,
        bf16=bf16,
        seq_length=seq_length,
        kernels=detect_kernels(chosen),
        perform_initialization=init_weights,
    )
    padded = padded_vocab_size or pad_vocab_size(vocab_size, tp_size)
    model = GPTModel(
        config=config,
        transformer_layer_spec=block_spec(
            layer_spec(chosen, core_attention), preset.num_layers, chosen
        ),
        vocab_size=padded,
        max_sequence_length=seq_length,
        pre_process=True,
        post_process=True,
        parallel_output=True,
        share_embeddings_and_output_weights=preset.tie_embeddings,
        position_embedding_type="rope",
        rotary_base=preset.rotary_base,
        rope_scaling=preset.rope_scaling,
        rope_scaling_factor=preset.rope_scaling_factor,
    )
    if bf16:
        # What Megatron-LM's Float16Module does to the parameters: the norms' weights are built
        # in fp32 by torch and would keep the local path's norms (and their inputs) in fp32.
        model.bfloat16()
    model.to(platform.device())
    if padded > vocab_size:
        mask_padded_vocabulary(model, vocab_size)
    n_params = sum(p.numel() for p in model.parameters())
    attention = "TE" if chosen == "transformer_engine" else f"{core_attention} core attention"
    logger.info(
        "built %s: %d layers, hidden %d, vocab %d (padded from %d), %.1fM params on this rank, "
        "%s, %s, %s", preset.name, preset.num_layers, preset.hidden_size, padded, vocab_size,
        n_params / 1e6, "bf16" if bf16 else "fp32", attention, platform.device(),
    )
    return model
