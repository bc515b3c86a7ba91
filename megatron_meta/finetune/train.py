"""LoRA instruction tuning with peft and the transformers ``Trainer``.

Layout of ``--output DIR``:

- ``checkpoints/checkpoint-N/``: the Trainer's resumable checkpoints (adapter, optimizer,
  scheduler, RNG states, data position). A re-run with the same ``--output`` continues from the
  newest one, so a preempted Slurm job resumes where it stopped (SIGTERM/SIGUSR1 save first).
- ``adapter/``: the final LoRA adapter and tokenizer, written when training completes (under a
  temporary name, then renamed); ``finetune_config.json`` the resolved recipe; ``log_history.json``
  the loss curve (train loss per logging step, eval loss per epoch).

Launch on several GPUs with ``torchrun --nproc-per-node N -m megatron_meta.cli finetune ...``
(the Trainer runs DDP under torchrun).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import shutil
import signal
from typing import List, Optional

from megatron_meta.errors import ConfigError
from megatron_meta.finetune.config import LoraRecipe
from megatron_meta.finetune.data import encode_all, pad_collate, read_alpaca, split

logger = logging.getLogger(__name__)


def _write_json(path: str, obj) -> None:
    # A temporary name per process: under torchrun every rank may write the same file.
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def drop_gguf_quantizer(model) -> None:
    """A model de-quantized from GGUF keeps its quantizer, which refuses training and saving;
    its weights are plain floats already, so the quantizer is dropped."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
        model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def latest_checkpoint(output: str) -> Optional[str]:
    found = glob.glob(os.path.join(output, "checkpoints", "checkpoint-*"))
    done = [p for p in found if os.path.exists(os.path.join(p, "trainer_state.json"))]
    return max(done, key=lambda p: int(p.rsplit("-", 1)[1])) if done else None


class StopRequest:
    """Turns SIGTERM/SIGUSR1 (Slurm's warnings before preemption) into 'save and stop' at the
    end of the current step; :meth:`request` does the same from code."""

    def __init__(self):
        self.requested = False

    def request(self, *_):
        self.requested = True

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            try:
                signal.signal(sig, self.request)
            except ValueError:  # not the main thread
                pass

    def callback(self):
        from transformers import TrainerCallback

        stop = self

        class _Stop(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if stop.requested:
                    control.should_save = True
                    control.should_training_stop = True
                return control

        return _Stop()


def run_finetune(model_path: str, data: str, output: str, recipe: LoraRecipe,
                 callbacks: Optional[List] = None, stop: Optional[StopRequest] = None) -> Optional[str]:
    """Train; returns the adapter folder, or None when stopped early (re-run to resume)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments, set_seed

    from megatron_meta.finetune.hf_load import load_causal_lm

    recipe.validate()
    examples = read_alpaca(data, recipe.max_examples)  # data errors before the model loads
    model, tokenizer, hf_folder = load_causal_lm(model_path)
    drop_gguf_quantizer(model)
    train_ex, valid_ex = split(examples, recipe.valid_fraction, recipe.seed)
    paper = recipe.protocol == "paper"
    train = encode_all(tokenizer, train_ex, recipe.seq_length, recipe.metadata_wrap, recipe.seed, paper)
    valid = encode_all(tokenizer, valid_ex, recipe.seq_length, recipe.metadata_wrap, recipe.seed + 1,
                       paper)
    dropped = len(train_ex) + len(valid_ex) - len(train) - len(valid)
    if dropped:
        logger.warning("%d example(s) left out: the prompt fills all --seq-length %d tokens",
                       dropped, recipe.seq_length)
    if not train or not valid:
        raise ConfigError(f"--seq-length {recipe.seq_length}: every response of a split is cut "
                          "away; raise it")
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in recipe.target_modules if t not in names]
    if missing:
        raise ConfigError(f"--target-modules: {', '.join(missing)} not in this model "
                          f"({model.config.model_type}); its linear layers include "
                          f"{', '.join(sorted(n for n in names if n.endswith('proj')))}")
    set_seed(recipe.seed)  # LoRA's A matrices are drawn now: the same run gets the same adapter
    model = get_peft_model(model, LoraConfig(
        r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
        target_modules=list(recipe.target_modules), task_type="CAUSAL_LM"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("LoRA r=%d on %s: %d trainable parameters; %d train / %d valid examples",
                recipe.lora_r, ",".join(recipe.target_modules), trainable, len(train), len(valid))

    os.makedirs(output, exist_ok=True)
    _write_json(os.path.join(output, "finetune_config.json"),
                {"model": model_path, "hf_folder": hf_folder, "data": os.path.abspath(data),
                 **dataclasses.asdict(recipe)})
    args = TrainingArguments(
        output_dir=os.path.join(output, "checkpoints"),
        per_device_train_batch_size=recipe.micro_batch_size,
        per_device_eval_batch_size=recipe.micro_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        # transformers 5 reads a warmup_steps below 1 as a ratio of the steps (warmup_ratio is
        # gone); the recipe keeps the ratio in [0, 1), so this is the ratio, not a step count.
        num_train_epochs=recipe.epochs, learning_rate=recipe.lr, warmup_steps=recipe.warmup_ratio,
        weight_decay=recipe.weight_decay, lr_scheduler_type="linear", seed=recipe.seed,
        data_seed=recipe.seed, eval_strategy="epoch", save_strategy="steps",
        save_steps=recipe.save_steps, save_total_limit=recipe.save_total_limit,
        logging_steps=recipe.logging_steps, report_to=[], remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every LoRA weight is used in every step
    )
    stop = stop or StopRequest()
    stop.install()
    trainer = Trainer(
        model=model, args=args, train_dataset=train, eval_dataset=valid,
        data_collator=pad_collate(tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                                  else tokenizer.eos_token_id),
        callbacks=[*(callbacks or []), stop.callback()],
    )
    resume = latest_checkpoint(output)
    if resume:
        logger.info("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=resume)
    if trainer.is_world_process_zero():
        _write_json(os.path.join(output, "log_history.json"), trainer.state.log_history)
    if trainer.state.global_step < trainer.state.max_steps:
        logger.warning("stopped at step %d of %d; checkpoint saved, run the same command to resume",
                       trainer.state.global_step, trainer.state.max_steps)
        return None
    if not trainer.is_world_process_zero():
        return None
    adapter = os.path.join(output, "adapter")
    tmp = adapter + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(adapter, ignore_errors=True)
    os.replace(tmp, adapter)
    logger.info("wrote the LoRA adapter to %s (merge: megatron-meta finetune merge --adapter %s "
                "--output DIR)", adapter, output)
    return adapter
