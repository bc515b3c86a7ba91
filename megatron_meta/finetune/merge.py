"""``finetune merge``: fold a LoRA adapter into its base model and save a standalone HF folder."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile

from megatron_meta.errors import CheckpointError
from megatron_meta.outputs import check_output, disk_full_guard, install_folder

logger = logging.getLogger(__name__)


def adapter_folder(path: str) -> str:
    """``path`` itself or its ``adapter/`` (the --output of ``finetune``)."""
    for candidate in (path, os.path.join(path, "adapter")):
        if os.path.exists(os.path.join(candidate, "adapter_config.json")):
            return candidate
    raise CheckpointError(f"--adapter {path}: no adapter_config.json here or in {path}/adapter; "
                          "give the --output of a completed `megatron-meta finetune`")


def merge_adapter(adapter: str, output: str, overwrite: bool = False) -> str:
    """Write the merged model and tokenizer to ``output`` (temporary name, then rename).

    A non-empty ``output`` is refused unless ``overwrite`` (then only the files written here are
    replaced); so is one overlapping the adapter or its base model.
    """
    from peft import PeftModel

    from megatron_meta.finetune.hf_load import load_causal_lm
    from megatron_meta.finetune.train import drop_gguf_quantizer

    folder = adapter_folder(adapter)
    with open(os.path.join(folder, "adapter_config.json"), encoding="utf-8") as f:
        base = json.load(f).get("base_model_name_or_path")
    if not base or not os.path.isdir(base):
        raise CheckpointError(f"--adapter {adapter}: its base model {base!r} is not a folder here")
    check_output(output, "--output", overwrite=overwrite, inputs=[adapter, base])
    model, _, _ = load_causal_lm(base, "--adapter's base model")
    drop_gguf_quantizer(model)
    merged = PeftModel.from_pretrained(model, folder).merge_and_unload()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    output = os.path.abspath(output)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(output) + ".tmp", dir=os.path.dirname(output))
    try:
        with disk_full_guard(output, lambda: [tmp]):
            merged.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            os.chmod(tmp, 0o755)
            install_folder(tmp, output, _written_here)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("merged %s into %s: wrote %s", folder, base, output)
    return output


def _written_here(name: str) -> bool:
    """Weight files of an earlier merge into the same folder (stale once replaced)."""
    return name.startswith(("model", "pytorch_model")) and (
        ".safetensors" in name or name.endswith(".bin")
    )
