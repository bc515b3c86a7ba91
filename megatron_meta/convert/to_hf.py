"""megatron-meta checkpoint -> Hugging Face ``LlamaForCausalLM`` folder (``convert to-hf``).

Reads the checkpoint whole on the CPU in one process (any saved TP size, see
:mod:`megatron_meta.checkpoints.tensors`), renames and splits tensors with the adapter tables of
:mod:`.hf_llama`, trims the vocabulary padding, and writes ``config.json``,
``generation_config.json``, ``model.safetensors`` (or shards plus an index above
``max_shard_bytes``) and the tokenizer of the run's manifest. Everything is written into a
temporary folder next to ``output`` and renamed into place when complete. A non-empty ``output``
is refused unless ``overwrite`` (then only the files written here are replaced), and so is an
output overlapping the checkpoint (:mod:`megatron_meta.outputs`).

Memory: one copy of the weights (the checkpoint's tensors) plus the shard being written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from typing import Callable, Dict, Iterator, List, Tuple

import torch

from megatron_meta.checkpoints import checkpoint_info
from megatron_meta.checkpoints.tensors import read_model_tensors
from megatron_meta.convert import hf_llama
from megatron_meta.convert.hf_tokenizer import export_tokenizer
from megatron_meta.convert.model_card import write_model_card
from megatron_meta.errors import CheckpointError, ConfigError
from megatron_meta.outputs import check_output, disk_full_guard, install_folder

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MAX_SHARD_BYTES = 2 * 1024**3

# (HF name, function giving the tensor, its size in bytes)
Planned = Tuple[str, Callable[[], torch.Tensor], int]


def _hf_tensors(
    tensors: Dict[str, torch.Tensor], preset, vocab_size: int
) -> Iterator[Tuple[str, Callable[[], torch.Tensor], Tuple[int, ...]]]:
    """Every HF tensor as (name, lazy producer, shape), in HF's usual order."""
    seen = set()

    def take(key: str) -> torch.Tensor:
        seen.add(key)
        return tensors[key]

    emb = take("embedding.word_embeddings.weight")
    yield "model.embed_tokens.weight", lambda: emb[:vocab_size], (vocab_size, emb.shape[1])
    for i in range(preset.num_layers):
        for suffix, hf_names in hf_llama.TO_HF_LAYER.items():
            key = hf_llama.LAYERS_MEGATRON + suffix
            if key not in tensors:
                continue
            stacked = take(key)
            prefix = f"{hf_llama.LAYERS_HF}{i}."
            if suffix == "self_attention.linear_qkv.weight":
                parts = hf_llama.split_qkv(stacked[i], preset)
            elif suffix == "mlp.linear_fc1.weight":
                parts = hf_llama.split_fc1(stacked[i])
            else:
                parts = (stacked[i],)
                hf_names = (hf_names,)
            for name, part in zip(hf_names, parts):
                yield prefix + name, (lambda p=part: p), tuple(part.shape)
    norm = take("decoder.final_layernorm.weight")
    yield "model.norm.weight", lambda: norm, tuple(norm.shape)
    if not preset.tie_embeddings:
        if "output_layer.weight" not in tensors:
            raise CheckpointError("the checkpoint has untied embeddings but no output_layer.weight")
        out = take("output_layer.weight")
        yield "lm_head.weight", lambda: out[:vocab_size], (vocab_size, out.shape[1])
    unknown = sorted(set(tensors) - seen)
    if unknown:
        raise CheckpointError(
            f"cannot convert checkpoint tensors {', '.join(unknown[:5])}: not in the Llama adapter "
            "(megatron_meta/convert/hf_llama.py)"
        )


def _plan_shards(planned: List[Planned], max_bytes: int) -> List[List[Planned]]:
    shards: List[List[Planned]] = [[]]
    size = 0
    for item in planned:
        if shards[-1] and size + item[2] > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += item[2]
    return shards


def _write_weights(folder: str, planned: List[Planned], dtype: torch.dtype, max_bytes: int) -> None:
    from safetensors.torch import save_file

    shards = _plan_shards(planned, max_bytes)
    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    weight_map = {}
    for filename, shard in zip(names, shards):
        # Copies of one shard at a time: contiguous, in the output dtype.
        data = {name: make().to(dtype).contiguous() for name, make, _ in shard}
        save_file(data, os.path.join(folder, filename), metadata={"format": "pt"})
        weight_map.update({name: filename for name in data})
        del data
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(p[2] for p in planned)},
            "weight_map": weight_map,
        }
        with open(os.path.join(folder, "model.safetensors.index.json"), "w", encoding="utf-8") as f:
            json.dump(index, f, indent=2)


def export_to_hf(
    load: str,
    output: str,
    dtype: str = "float32",
    *,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    overwrite: bool = False,
) -> str:
    """Write the newest checkpoint of ``load`` as a Hugging Face folder ``output``; returns it."""
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: choose from {', '.join(DTYPES)}")
    check_output(output, "--output", overwrite=overwrite, inputs=[load])
    torch_dtype = DTYPES[dtype]
    info = checkpoint_info(load)
    tensors = read_model_tensors(info.path)
    preset, vocab = info.preset, info.vocab_size
    element = torch.finfo(torch_dtype).bits // 8
    planned = [
        (name, make, element * int(torch.Size(shape).numel()))
        for name, make, shape in _hf_tensors(tensors, preset, vocab)
    ]
    output = os.path.abspath(output)
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(output) + ".tmp", dir=parent)
    needed = sum(p[2] for p in planned)
    try:
        with disk_full_guard(output, lambda: [tmp], needed):
            _write_weights(tmp, planned, torch_dtype, max_shard_bytes)
            del tensors, planned
            special = export_tokenizer(info.tokenizer, tmp)
            config = hf_llama.hf_config(preset, vocab, torch_dtype, special.bos_id, special.eos_id)
            config.save_pretrained(tmp)
            _write_generation_config(tmp, config)
            write_model_card(tmp, info, load)
            os.chmod(tmp, 0o755)
            install_folder(tmp, output, _written_here)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info(
        "wrote %s (%s, %d layers, vocab %d, %s) from %s", output, preset.name, preset.num_layers,
        vocab, dtype, info.path,
    )
    return output


def _write_generation_config(folder: str, config) -> None:
    from transformers import GenerationConfig

    GenerationConfig.from_model_config(config).save_pretrained(folder)


def _written_here(name: str) -> bool:
    """Weight files of an earlier export into the same folder (stale once replaced)."""
    return name.startswith("model") and ".safetensors" in name
