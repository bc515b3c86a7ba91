"""Checks that need no process group and no megatron-core: run before anything heavy starts.

A wrong flag, parallel layout, manifest, variant, region or checkpoint is reported in a second or
two, from every rank alike, instead of after the model is built.
"""

from __future__ import annotations

import logging
import os

from megatron_meta.checkpoints import checkpoint_info
from megatron_meta.errors import CheckpointError, ConfigError
from megatron_meta.metadata.formatting import VARIANTS
from megatron_meta.models.presets import get_preset
from megatron_meta.parallel import validate_layout
from megatron_meta.platform import cpu as platform
from megatron_meta.manifest import Manifest, load_manifest
from megatron_meta.outputs import check_output
from megatron_meta.training import checkpoint as ckpt
from megatron_meta.training import nonfinite
from megatron_meta.training.config import RunConfig
from megatron_meta.training.shards import parse_region_weights, select_shards
from megatron_meta.training.starting_point import (
    check_tokenizer,
    fall_back_if_damaged,
    starting_point,
)

logger = logging.getLogger(__name__)


def validate(config: RunConfig) -> None:
    """Check values on their own and against each other; raise ConfigError naming the flag."""
    m, d, t, o, c = config.model, config.data, config.training, config.optimizer, config.checkpoint
    if m.preset is not None:
        get_preset(m.preset)
    positive = {
        "--seq-length": m.seq_length,
        "--tensor-model-parallel-size": config.parallel.tensor_model_parallel_size,
        "--micro-batch-size": t.micro_batch_size,
        "--global-batch-size": t.global_batch_size,
        "--train-iters": t.train_iters,
        "--eval-iters": t.eval_iters,
        "--log-interval": config.logging.log_interval,
        "--exit-interval": t.exit_interval,
        "--eval-interval": t.eval_interval,
        "--save-interval": c.save_interval,
        "--lr-decay-iters": o.lr_decay_iters,
    }
    for flag, value in positive.items():
        if value is not None and value < 1:
            raise ConfigError(f"{flag} {value} must be at least 1")
    if d.num_workers < 0:
        raise ConfigError(f"--num-workers {d.num_workers} must be 0 or more")
    if t.exit_duration_in_mins is not None and t.exit_duration_in_mins <= 0:
        raise ConfigError(f"--exit-duration-in-mins {t.exit_duration_in_mins} must be positive")
    if t.exit_duration_margin_mins < 0:
        raise ConfigError(
            f"--exit-duration-margin-mins {t.exit_duration_margin_mins} must be 0 or more"
        )
    if t.global_batch_size % t.micro_batch_size:
        raise ConfigError(
            f"--global-batch-size {t.global_batch_size} is not a multiple of --micro-batch-size "
            f"{t.micro_batch_size}"
        )
    if d.manifest is None:
        raise ConfigError("--data-manifest is required: the manifest.json of a preprocessing run")
    if d.variant not in VARIANTS:
        raise ConfigError(
            f"--variant {d.variant!r} is not a variant; choose from {', '.join(VARIANTS)}"
        )
    weights = parse_region_weights(d.region_weights)
    if isinstance(weights, dict):
        clash = sorted(set(weights) & set(d.exclude_regions))
        if clash:
            raise ConfigError(
                f"--region-weights names {', '.join(clash)}, which --exclude-regions leaves out"
            )
    if not 0.0 <= d.metadata_cooldown_fraction < 1.0:
        raise ConfigError(
            f"--metadata-cooldown-fraction {d.metadata_cooldown_fraction} must be in [0, 1) "
            "(MeCo uses 0.1)"
        )
    if d.metadata_cooldown_fraction > 0 and d.variant == "none":
        raise ConfigError(
            "--metadata-cooldown-fraction switches to the 'none' variant: train with a metadata "
            "--variant (e.g. full), or drop the flag"
        )
    if o.lr <= 0:
        raise ConfigError(f"--lr {o.lr} must be positive")
    if not 0 <= o.min_lr <= o.lr:
        raise ConfigError(f"--min-lr {o.min_lr} must be between 0 and --lr {o.lr}")
    if not 0 <= o.lr_warmup_iters <= t.train_iters:
        raise ConfigError(
            f"--lr-warmup-iters {o.lr_warmup_iters} must be between 0 and --train-iters "
            f"{t.train_iters}"
        )
    if o.lr_decay_iters is not None and o.lr_decay_iters < o.lr_warmup_iters:
        raise ConfigError(
            f"--lr-decay-iters {o.lr_decay_iters} ends before the warmup "
            f"(--lr-warmup-iters {o.lr_warmup_iters})"
        )
    if o.lr_decay_style not in ("cosine", "linear", "constant"):
        raise ConfigError(
            f"--lr-decay-style {o.lr_decay_style!r}: choose cosine, linear or constant"
        )
    if o.weight_decay < 0 or o.clip_grad < 0:
        raise ConfigError("--weight-decay and --clip-grad must be 0 or more")
    for flag, beta in (("--adam-beta1", o.adam_beta1), ("--adam-beta2", o.adam_beta2)):
        if not 0.0 <= beta < 1.0:
            raise ConfigError(f"{flag} {beta} must be in [0, 1)")
    if o.adam_eps <= 0:
        raise ConfigError(f"--adam-eps {o.adam_eps} must be positive")
    if config.logging.peak_tflops is not None and config.logging.peak_tflops <= 0:
        raise ConfigError(f"--peak-tflops {config.logging.peak_tflops} must be positive")
    if m.transformer_impl not in ("auto", "transformer_engine", "local"):
        raise ConfigError(
            f"--transformer-impl {m.transformer_impl!r}: choose auto, transformer_engine or local"
        )
    if t.on_nonfinite not in nonfinite.CHOICES:
        raise ConfigError(f"--on-nonfinite {t.on_nonfinite!r}: choose stop or skip")


def preflight(config: RunConfig) -> Manifest:
    """Validate the config against the world size, the manifest and ``--load``; return the
    loaded manifest."""
    validate(config)
    if config.checkpoint.save:  # resumable, so not refused when it exists; only creatable
        check_output(config.checkpoint.save, "--save", overwrite=True)
    fall_back_if_damaged(config)
    start = starting_point(config)
    preset = start.preset
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    validate_layout(
        world_size,
        config.parallel.tensor_model_parallel_size,
        preset.num_attention_heads,
        preset.num_query_groups,
        config.training.micro_batch_size,
        config.training.global_batch_size,
    )
    if config.model.bf16 and not platform.cuda_available():
        raise ConfigError("--bf16 needs CUDA; on the CPU training runs in fp32 (--no-bf16)")
    manifest = load_manifest(config.data.manifest)
    select_shards(manifest, config.data.variant, config.data.exclude_regions)
    resume_from_save(config)
    load, save = config.checkpoint.load, config.checkpoint.save
    if start.mode != "fresh":  # refuse another model's checkpoint before building anything
        info = checkpoint_info(start.path)
        if start.mode == "weights":
            check_tokenizer(info, manifest, start.flag)
        elif info.weights_only:
            raise CheckpointError(
                f"{start.flag}: {info.path} holds weights only (no optimizer state, e.g. "
                "converted from Hugging Face); start a new run from it with --finetune, or with "
                f"--pretrained-checkpoint {start.path}"
            )
        identity = ckpt.model_identity(preset, manifest.tokenizer.vocab_size)
        ckpt.check_identity(info.common["model_identity"], identity, start.flag)
    elif load and os.path.abspath(load) != os.path.abspath(save or ""):
        raise CheckpointError(
            f"--load {load}: no checkpoint there; give the --save folder of an earlier run"
        )
    if save is None and rank_zero():
        logger.warning("no --save folder: no checkpoints and no metrics.jsonl will be written")
    return manifest


def resume_from_save(config: RunConfig) -> None:
    """Without ``--load``, resume from ``--save`` when it holds a complete checkpoint: a
    requeued or resubmitted job continues where it stopped with the same command."""
    c = config.checkpoint
    if c.load is None and c.save and os.path.isdir(c.save) and ckpt.latest_checkpoint(c.save):
        c.load = c.save
        if rank_zero():
            logger.info("resuming from the newest checkpoint in --save %s", c.save)


def rank_zero() -> bool:
    return os.environ.get("RANK", "0") == "0"
