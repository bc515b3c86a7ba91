"""Open any model of a study as a Hugging Face causal LM: an HF folder or a megatron-meta checkpoint.

A megatron-meta checkpoint is exported once to a Hugging Face folder (``convert to-hf``) in the
user cache, keyed by the checkpoint's path and modification time, so that scoring several
settings or resuming a fine-tune does not convert it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Tuple

from megatron_meta.assets import cache_root
from megatron_meta.checkpoints import is_megatron_checkpoint
from megatron_meta.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)


def resolve_hf_folder(path: str, flag: str = "--model") -> str:
    """A Hugging Face folder for ``path``, converting a megatron-meta checkpoint on the way."""
    if not os.path.isdir(path):
        raise ConfigError(f"{flag} {path}: no such folder; give a Hugging Face model folder or a "
                          "megatron-meta checkpoint (--save of train)")
    if os.path.exists(os.path.join(path, "config.json")):
        return path
    if not is_megatron_checkpoint(path):
        raise CheckpointError(
            f"{flag} {path}: neither a Hugging Face model (no config.json) nor a megatron-meta "
            "checkpoint")
    from megatron_meta.convert.to_hf import export_to_hf

    real = os.path.realpath(path)
    key = hashlib.sha1(f"{real}:{os.path.getmtime(real)}".encode()).hexdigest()[:16]
    out = os.path.join(cache_root(), "hf-exports", f"{os.path.basename(real)}-{key}")
    if not os.path.exists(os.path.join(out, "config.json")):
        logger.info("converting megatron-meta checkpoint %s to a Hugging Face folder %s", path, out)
        export_to_hf(path, out, "float32", overwrite=True)  # our own cache entry
    return out


def load_causal_lm(path: str, flag: str = "--model", dtype: str = "float32") -> Tuple[object, object, str]:
    """``(model, tokenizer, hf_folder)`` in eval mode; a clear error for a non-causal-LM folder."""
    import torch

    try:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise ConfigError(f"{flag}: Hugging Face models need the hf extra ({e}); "
                          "pip install -e '.[hf]'") from e

    # Absolute, so that an adapter records a base model path that works from any directory.
    folder = os.path.abspath(resolve_hf_folder(path, flag))
    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{flag} {path}: {folder}/config.json is not a model config ({e})")
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise CheckpointError(
            f"{flag} {path}: model type {config.model_type!r} is not a causal language model; "
            "give a decoder-only LM (Llama, SmolLM2, a converted megatron-meta checkpoint)")
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype))
    except ValueError as e:
        raise CheckpointError(
            f"{flag} {path}: model type {getattr(config, 'model_type', '?')!r} is not a causal "
            f"language model ({str(e).splitlines()[0]}); give a decoder-only LM") from e
    except OSError as e:
        raise CheckpointError(f"{flag} {path}: cannot load the model weights ({e})") from e
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{flag} {path}: no usable tokenizer in {folder} ({e})") from e
    model.eval()
    return model, tokenizer, folder
