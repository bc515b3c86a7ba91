"""Hugging Face Llama-architecture folder -> megatron-meta checkpoint (``convert from-hf``).

The model's shape comes from its ``config.json`` (any Llama shape, recorded in the checkpoint so
no preset is needed later; a shape we cannot represent is refused naming the field). Weights are
read one tensor at a time from safetensors (a GGUF file or ``pytorch_model.bin`` goes through
transformers, de-quantized), renamed and merged with the adapter tables of :mod:`.hf_llama`
into megatron-core's ``GPTModel`` (local layer spec, fp32, TP=1 in this process) and saved with
``dist_checkpointing``, which any TP size loads. The tokenizer is saved into ``SAVE/tokenizer``
(special tokens and chat template kept) and recorded as the checkpoint's tokenizer, ready for
``preprocess --tokenizer-type HuggingFaceTokenizer --tokenizer-model SAVE/tokenizer``.

The checkpoint holds weights only (``train --finetune`` / ``--pretrained-checkpoint``,
``evaluate``, ``convert to-hf``). Everything is written into a temporary folder next to ``save``
and renamed into place when complete.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from typing import Callable, Dict, Optional

import torch

from megatron_meta.checkpoints import FORMAT_VERSION, model_identity
from megatron_meta.checkpoints.write import save_state
from megatron_meta.convert import hf_llama
from megatron_meta.errors import CheckpointError, ConfigError
from megatron_meta.outputs import check_output, disk_full_guard

logger = logging.getLogger(__name__)

TOKENIZER_DIR = "tokenizer"


def _read_config(hf_dir: str, gguf_file: Optional[str]) -> Dict:
    if gguf_file:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(hf_dir, gguf_file=gguf_file).to_dict()
    path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(path):
        raise ConfigError(
            f"--hf {hf_dir}: no config.json there (a GGUF file: add --gguf-file NAME)"
        )
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a readable config.json ({e})") from e


def _tensor_source(
    hf_dir: str, gguf_file: Optional[str]
) -> Callable[[str], Optional[torch.Tensor]]:
    """name -> tensor (None if absent): safetensors one tensor at a time, else via transformers."""
    single = os.path.join(hf_dir, "model.safetensors")
    index = os.path.join(hf_dir, "model.safetensors.index.json")
    if not gguf_file and (os.path.isfile(single) or os.path.isfile(index)):
        from safetensors import safe_open

        def read(path: str, what: Callable):
            # safetensors raises its own error type (and OSError) for a missing or cut file
            try:
                with safe_open(path, "pt") as f:
                    return what(f)
            except Exception as e:
                reason = "missing" if not os.path.isfile(path) else f"unreadable ({e})"
                raise CheckpointError(
                    f"{path}: safetensors file {reason}; download or copy the model again"
                ) from None

        if os.path.isfile(index):
            try:
                with open(index, encoding="utf-8") as f:
                    files = json.load(f)["weight_map"]
                files = {str(k): str(v) for k, v in files.items()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise CheckpointError(f"{index}: not a safetensors index ({e!r})") from None
        else:
            files = {k: "model.safetensors" for k in read(single, lambda f: list(f.keys()))}

        def get(name: str) -> Optional[torch.Tensor]:
            if name not in files:
                return None
            return read(os.path.join(hf_dir, files[name]), lambda f: f.get_tensor(name))

        return get
    from transformers import AutoModelForCausalLM

    from megatron_meta.assets import strip_gguf_quantizer

    logger.info("loading %s through transformers (de-quantizing a GGUF file takes a while)",
                gguf_file or hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, gguf_file=gguf_file, dtype=torch.float32)
    strip_gguf_quantizer(model)
    state = model.state_dict()
    return state.get


def _weights_bytes(hf_dir: str, gguf_file: Optional[str]) -> int:
    """About what the checkpoint needs on disk: the size of the source weights (for messages)."""
    names = [gguf_file] if gguf_file else [
        n for n in os.listdir(hf_dir) if n.endswith((".safetensors", ".bin"))
    ]
    return sum(os.path.getsize(os.path.join(hf_dir, n)) for n in names)


def _copy_weights(model: torch.nn.Module, get, preset, vocab: int, where: str) -> None:
    """Fill the GPTModel's parameters from HF tensors via the FROM_HF tables."""
    params = dict(model.named_parameters())
    filled = set()

    def put(name: str, value: torch.Tensor) -> None:
        target = params[name]
        if name in ("embedding.word_embeddings.weight", "output_layer.weight"):
            target.data.zero_()  # vocabulary padding rows
            target.data[: value.shape[0]].copy_(value)
        elif tuple(target.shape) != tuple(value.shape):
            raise CheckpointError(f"{where}: {name} has shape {tuple(value.shape)}, expected "
                                  f"{tuple(target.shape)}")
        else:
            target.data.copy_(value)
        filled.add(name)

    def need(hf_name: str) -> torch.Tensor:
        value = get(hf_name)
        if value is None:
            raise CheckpointError(f"{where}: tensor {hf_name} is missing")
        return value.float()

    for hf_name, ours in hf_llama.FROM_HF_GLOBAL.items():
        if ours in params:
            value = get(hf_name)
            if value is None and hf_name == "lm_head.weight":
                raise CheckpointError(f"{where}: untied embeddings but no lm_head.weight")
            put(ours, need(hf_name) if value is None else value.float())
    for i in range(preset.num_layers):
        ours_prefix, hf_prefix = f"{hf_llama.LAYERS_MEGATRON}{i}.", f"{hf_llama.LAYERS_HF}{i}."
        for hf_names, ours in hf_llama.FROM_HF_LAYER.items():
            if isinstance(hf_names, tuple):
                parts = [need(hf_prefix + n) for n in hf_names]
                merged = (
                    hf_llama.merge_qkv(*parts, preset) if len(parts) == 3
                    else hf_llama.merge_fc1(*parts)
                )
                put(ours_prefix + ours, merged)
            else:
                put(ours_prefix + ours, need(hf_prefix + hf_names))
    missing = sorted(set(params) - filled)
    if missing:
        raise CheckpointError(f"{where}: no Hugging Face tensor for {', '.join(missing[:5])}")


def _save_tokenizer(
    hf_dir: str, gguf_file: Optional[str], folder: str, final: str
) -> Optional[Dict]:
    """Save the HF tokenizer into ``folder`` (renamed to ``final`` later); its manifest entry."""
    from transformers import AutoTokenizer

    from megatron_meta.tokenizer.load import load_tokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(hf_dir, gguf_file=gguf_file)
    except (OSError, ValueError) as e:  # a weights-only folder
        logger.warning("%s: no loadable tokenizer (%s); the checkpoint records none", hf_dir, e)
        return None
    tokenizer.save_pretrained(folder)
    ours = load_tokenizer("HuggingFaceTokenizer", folder)  # what preprocess will record
    return {
        "type": "HuggingFaceTokenizer",
        "model": final,
        "vocab_size": int(ours.vocab_size),
        "eod_id": int(ours.eod) if ours.eod is not None else -1,
    }


def _run_config(seq_length: int, tp: int) -> Dict:
    from megatron_meta.training.config import RunConfig

    config = RunConfig()  # preset None: the shape is the checkpoint's model_identity
    config.model.seq_length = seq_length
    config.parallel.tensor_model_parallel_size = tp
    out = config.to_dict()
    out["data"]["variant"] = None  # not trained by us: no metadata variant to report
    return out


def import_from_hf(
    hf_dir: str, save: str, tensor_model_parallel_size: int = 1, gguf_file: Optional[str] = None
) -> str:
    """Convert the HF model in ``hf_dir`` into a megatron-meta checkpoint folder ``save``."""
    from megatron.core import parallel_state

    from megatron_meta.models.build import build_model, pad_vocab_size
    from megatron_meta.parallel import destroy_parallel, initialize_parallel

    tp = tensor_model_parallel_size
    if not os.path.isdir(hf_dir):
        raise ConfigError(f"--hf {hf_dir}: no such folder (give a local Hugging Face model folder)")
    if gguf_file and not os.path.isfile(os.path.join(hf_dir, gguf_file)):
        raise ConfigError(f"--gguf-file {gguf_file}: not found in {hf_dir}")
    check_output(save, "--save", inputs=[hf_dir], offers_overwrite=False)
    where = os.path.join(hf_dir, gguf_file or "config.json")
    config = _read_config(hf_dir, gguf_file)
    folder_name = os.path.basename(os.path.normpath(hf_dir))
    name = os.path.splitext(gguf_file)[0] if gguf_file else folder_name
    preset, vocab = hf_llama.preset_from_hf(config, name, where)
    for what, count in (("num_attention_heads", preset.num_attention_heads),
                        ("num_key_value_heads", preset.num_query_groups)):
        if tp < 1 or count % tp:
            raise ConfigError(
                f"--tensor-model-parallel-size {tp} does not divide {what}={count} of {where}"
            )
    get = _tensor_source(hf_dir, gguf_file)

    started = not parallel_state.model_parallel_is_initialized()
    if started:
        initialize_parallel(1, seed=0)
    elif parallel_state.get_tensor_model_parallel_world_size() != 1:
        raise ConfigError(
            "convert from-hf runs in one process (TP=1); the checkpoint loads at any TP"
        )
    save = os.path.abspath(save)
    parent = os.path.dirname(save)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(save) + ".tmp", dir=parent)
    try:
        with disk_full_guard(save, lambda: [tmp], _weights_bytes(hf_dir, gguf_file)):
            model = build_model(
                preset, vocab_size=vocab, seq_length=preset.max_position_embeddings, tp_size=1,
                backend="local", bf16=False, init_weights=False,
                padded_vocab_size=pad_vocab_size(vocab, tp),
            )
            _copy_weights(model, get, preset, vocab, where)
            del get
            tokenizer = _save_tokenizer(
                hf_dir, gguf_file, os.path.join(tmp, TOKENIZER_DIR),
                os.path.join(save, TOKENIZER_DIR),
            )
            if tokenizer and tokenizer["vocab_size"] != vocab:
                logger.warning(
                    "the tokenizer has %d tokens, the model %d: shards must be written with a "
                    "%d-token tokenizer to train it", tokenizer["vocab_size"], vocab, vocab,
                )
            state = {
                "model": model.sharded_state_dict(),
                "format_version": FORMAT_VERSION,
                "iteration": 0,
                "consumed_samples": 0,
                "model_identity": model_identity(preset, vocab),
                "config": _run_config(preset.max_position_embeddings, tp),
                "layout": {"world_size": 1, "tp": tp, "dp": 1},
                "tokenizer": tokenizer,
                "weights_only": True,
                "source": {"hf": os.path.abspath(hf_dir), "gguf_file": gguf_file,
                           "preset": dataclasses.asdict(preset)},
            }
            save_state(tmp, 0, state)
            del model, state
            os.chmod(tmp, 0o755)
            if os.path.isdir(save):
                os.rmdir(save)  # empty: checked above
            os.replace(tmp, save)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if started:
            destroy_parallel()
    logger.info("wrote %s (%s: %d layers, hidden %d, vocab %d) from %s", save, name,
                preset.num_layers, preset.hidden_size, vocab, where)
    return save

