"""The training configuration: typed sections, a YAML recipe, and Megatron-LM style flags.

Precedence: dataclass defaults < the YAML recipe (``--config FILE``) < command-line flags.
A recipe is nested by section, with field names as keys::

    model: {preset: paper-1b, seq_length: 2048}
    training: {micro_batch_size: 8, global_batch_size: 2048, train_iters: 10000}
    optimizer: {lr: 3.0e-3, min_lr: 3.0e-4}

Flags are flat and use Megatron-LM's names where they exist (``--micro-batch-size``, ``--lr``,
``--tensor-model-parallel-size`` ...). :mod:`.preflight` validates the result before any process
group starts; each error names the flag, the value and the fix.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import yaml

from megatron_meta.errors import ConfigError


def _opt(default: Any, *flags: str, help: str, **extra: Any) -> Any:
    """A dataclass field carrying its command-line flag(s) and its documentation."""
    meta = {"flags": flags, "help": help, **extra}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    """Which model to build."""

    preset: Optional[str] = _opt(
        None,
        "--model",
        help="model preset (megatron_meta.models.presets.PRESETS); when left out, the shape of "
        "the checkpoint the run starts from (--load, --pretrained-checkpoint), else tiny",
    )
    seq_length: int = _opt(2048, "--seq-length", help="tokens per training sequence")
    transformer_impl: str = _opt(
        "auto",
        "--transformer-impl",
        help="layer spec: auto (Transformer Engine when it imports and CUDA is present), "
        "transformer_engine or local",
    )
    bf16: Optional[bool] = _opt(
        None,
        "--bf16",
        help="bf16 parameters with fp32 main weights (default: on with CUDA, off "
        "on the CPU); --no-bf16 forces fp32",
    )


@dataclass
class ParallelConfig:
    """How the model and the batch are split over processes (DP = world size / TP)."""

    tensor_model_parallel_size: int = _opt(
        1, "--tensor-model-parallel-size", "--tp", help="tensor-parallel degree"
    )
    use_distributed_optimizer: bool = _opt(
        False,
        "--use-distributed-optimizer",
        help="shard optimizer state over data-parallel ranks (megatron-core, needs CUDA)",
    )
    overlap_grad_reduce: Optional[bool] = _opt(
        None,
        "--overlap-grad-reduce",
        help="overlap the data-parallel gradient reduction with the backward pass (megatron "
        "DDP buckets; default: on with CUDA when data-parallel ranks span several nodes)",
    )


@dataclass
class DataConfig:
    """Which preprocessed shards to train on and how to mix them."""

    manifest: Optional[str] = _opt(
        None, "--data-manifest", help="manifest.json written by `megatron-meta preprocess`"
    )
    variant: str = _opt("full", "--variant", help="metadata variant of the shards to train on")
    region_weights: Optional[str] = _opt(
        None,
        "--region-weights",
        help="blend of regions: 'balanced' (equal weights) or 'Africa=2,Asia=1'; default: in "
        "proportion to each region's tokens (see --region-mix interleave for the paper's mix)",
    )
    region_mix: str = _opt(
        "blend",
        "--region-mix",
        help="blend: megatron-core's token blend by --region-weights, documents shuffled; "
        "interleave: the paper's global/leave-one-out data, groups of one document per region "
        "(shuffled with --seed), as many as the smallest region has, read in order",
    )
    exclude_regions: List[str] = _opt(
        [],
        "--exclude-regions",
        help="comma list of regions left out of training (leave-one-out)",
        list_of=str,
    )
    mask_metadata_loss: bool = _opt(
        False,
        "--mask-metadata-loss",
        help="no loss on metadata tokens (MeCo); uses the preprocessing sidecar",
    )
    metadata_cooldown_fraction: float = _opt(
        0.0,
        "--metadata-cooldown-fraction",
        help="train the last F of the iterations on the 'none' variant (MeCo uses 0.1)",
    )
    split: str = _opt(
        "98,2,0",
        "--split",
        help="train,valid,test split of the shards, used only when the manifest has no "
        "held-out 'valid' documents",
    )
    data_cache_path: Optional[str] = _opt(
        None,
        "--data-cache-path",
        help="where megatron-core caches dataset indices (default: next to the shards)",
    )
    num_workers: int = _opt(2, "--num-workers", help="data-loader worker processes per rank")


@dataclass
class TrainingConfig:
    """Batch, length of the run and evaluation cadence."""

    micro_batch_size: int = _opt(
        1, "--micro-batch-size", help="sequences per forward pass per rank"
    )
    global_batch_size: int = _opt(
        8,
        "--global-batch-size",
        help="sequences per optimizer step over all data-parallel ranks (micro-batches are "
        "accumulated to reach it)",
    )
    train_iters: int = _opt(1000, "--train-iters", help="optimizer steps of the whole run")
    seed: int = _opt(1234, "--seed", help="seed of weights, data order and RNG states")
    exit_interval: Optional[int] = _opt(
        None, "--exit-interval", help="stop (after saving) once the iteration is a multiple of N"
    )
    exit_duration_in_mins: Optional[float] = _opt(
        None,
        "--exit-duration-in-mins",
        help="save and stop after this many minutes (default inside a Slurm job with a time "
        "limit: until the job's end minus --exit-duration-margin-mins)",
    )
    exit_duration_margin_mins: float = _opt(
        5.0,
        "--exit-duration-margin-mins",
        help="minutes kept before a Slurm job's end for the last iteration and checkpoint",
    )
    eval_interval: Optional[int] = _opt(
        None, "--eval-interval", help="validation every N iterations (always at the end)"
    )
    eval_iters: int = _opt(
        10, "--eval-iters", help="validation micro-batches per data-parallel rank and region"
    )
    on_nonfinite: str = _opt(
        "stop",
        "--on-nonfinite",
        help="a NaN/inf loss or gradient (checked before every optimizer step, as Megatron-LM's "
        "--check-for-nan-in-loss-and-grad): stop (exit code 2, nothing saved) or skip the step",
    )


@dataclass
class OptimizerConfig:
    """AdamW with linear warmup then decay to ``min_lr``."""

    lr: float = _opt(3e-4, "--lr", help="peak learning rate")
    min_lr: float = _opt(0.0, "--min-lr", help="learning rate at the end of the decay")
    lr_warmup_iters: int = _opt(0, "--lr-warmup-iters", help="iterations of linear warmup")
    lr_decay_iters: Optional[int] = _opt(
        None, "--lr-decay-iters", help="iteration the decay ends at (default: --train-iters)"
    )
    lr_decay_style: str = _opt("cosine", "--lr-decay-style", help="cosine, linear or constant")
    weight_decay: float = _opt(
        0.01, "--weight-decay", help="decoupled weight decay (not applied to norms and biases)"
    )
    weight_decay_all: bool = _opt(
        False, "--weight-decay-all",
        help="decay norms and biases too (the authors' nanotron runs; FACTS 1a)",
    )
    clip_grad: float = _opt(1.0, "--clip-grad", help="clip the global gradient norm (0: off)")
    adam_beta1: float = _opt(0.9, "--adam-beta1", help="AdamW beta1")
    adam_beta2: float = _opt(0.95, "--adam-beta2", help="AdamW beta2")
    adam_eps: float = _opt(1e-8, "--adam-eps", help="AdamW epsilon")


@dataclass
class CheckpointConfig:
    """Where checkpoints go and come from."""

    save: Optional[str] = _opt(
        None, "--save", help="checkpoint folder (also holds config.yaml and metrics.jsonl)"
    )
    load: Optional[str] = _opt(
        None,
        "--load",
        help="resume from the latest checkpoint in this folder (default: --save when it holds "
        "one, so a requeued job continues by itself)",
    )
    save_interval: Optional[int] = _opt(
        None, "--save-interval", help="checkpoint every N iterations (always at the end)"
    )
    finetune: bool = _opt(
        False,
        "--finetune",
        help="with --load: load the weights only; iteration, optimizer, schedule and data "
        "position start afresh (Megatron-LM's flag)",
    )
    pretrained_checkpoint: Optional[str] = _opt(
        None,
        "--pretrained-checkpoint",
        help="start a new run from these weights (a train or `convert from-hf` folder) while "
        "--load holds no checkpoint yet; a requeued job then resumes from --load",
    )
    load_fallback: bool = _opt(
        False,
        "--load-fallback",
        help="when the newest checkpoint of --load (or --save) is damaged (a file missing or cut), "
        "resume from the newest complete earlier one instead of stopping",
    )


@dataclass
class LoggingConfig:
    """What is reported while training."""

    log_interval: int = _opt(10, "--log-interval", help="one log line every N iterations")
    tensorboard_dir: Optional[str] = _opt(
        None, "--tensorboard-dir", help="TensorBoard event folder (default: SAVE/tensorboard)"
    )
    peak_tflops: Optional[float] = _opt(
        None,
        "--peak-tflops",
        help="peak dense TFLOP/s of one device for MFU (default: from the GPU table; none on CPU)",
    )
    wandb_project: Optional[str] = _opt(
        None, "--wandb-project", help="Weights & Biases project: logs the training metrics there"
    )
    wandb_exp_name: Optional[str] = _opt(
        None, "--wandb-exp-name", help="W&B run name (default: the --save folder's name)"
    )
    wandb_save_dir: Optional[str] = _opt(
        None, "--wandb-save-dir", help="W&B's local files (default: SAVE/wandb); WANDB_MODE=offline keeps them there"
    )


SECTIONS: Dict[str, type] = {
    "model": ModelConfig,
    "parallel": ParallelConfig,
    "data": DataConfig,
    "training": TrainingConfig,
    "optimizer": OptimizerConfig,
    "checkpoint": CheckpointConfig,
    "logging": LoggingConfig,
}


@dataclass
class RunConfig:
    """Everything ``megatron-meta train`` needs, one section per concern."""

    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Values: one coercion used by YAML and flags alike, so both accept and reject the same things.


def _field_types(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(tp: Any) -> Any:
    """``Optional[X]`` -> ``X``."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) is typing.Union and len(args) == 1 else tp


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML or flag value to the field's type, or raise ConfigError naming ``where``."""
    optional = type(None) in typing.get_args(tp)
    base = _base_type(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"{where}: a value is required")
    try:
        if typing.get_origin(base) in (list, List):
            items = value.split(",") if isinstance(value, str) else list(value)
            return [str(x).strip() for x in items if str(x).strip()]
        if base is bool:
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text in ("true", "yes", "1", "on"):
                return True
            if text in ("false", "no", "0", "off"):
                return False
            raise ValueError(value)
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError(value)
            number = float(value)  # PyYAML reads '3e-3' as a string: accept it here
            if not math.isfinite(number):  # inf/nan would train to NaN and exit 0
                raise ConfigError(f"{where}: {value!r} is not a finite number")
            return number
        if base is str:
            if isinstance(value, dict):  # region_weights written as a mapping in YAML
                return ",".join(f"{k}={v}" for k, v in value.items())
            return str(value)
    except (TypeError, ValueError):
        pass
    name = getattr(base, "__name__", str(base))
    raise ConfigError(f"{where}: {value!r} is not a valid {name}")


# --------------------------------------------------------------------------------------------
# YAML


def load_yaml(path: str, config: Optional[RunConfig] = None) -> RunConfig:
    """Apply a YAML recipe on top of ``config`` (defaults when None)."""
    config = config or RunConfig()
    if not os.path.isfile(path):
        raise ConfigError(f"--config {path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {path}: not valid YAML ({e})")
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {path}: expected sections ({', '.join(SECTIONS)}) at the top")
    for section, values in raw.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"{path}: unknown section {section!r}; sections are {', '.join(SECTIONS)}"
            )
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: section {section!r} must be a mapping of field: value")
        target = getattr(config, section)
        types = _field_types(type(target))
        for key, value in values.items():
            if key not in types:
                known = ", ".join(types)
                raise ConfigError(f"{path}: unknown key {section}.{key}; {section} has {known}")
            setattr(target, key, _coerce(value, types[key], f"{path}: {section}.{key}"))
    return config


def dump_yaml(config: RunConfig, path: str) -> None:
    """Write the resolved config (temporary name, then rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("# resolved configuration of this run (recipe + flags); reusable with --config\n")
        yaml.safe_dump(config.to_dict(), f, sort_keys=False)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Flags


def build_parser() -> argparse.ArgumentParser:
    """Flags for every field; unset flags are absent from the namespace (so YAML values stay)."""
    parser = argparse.ArgumentParser(
        prog="megatron-meta train",
        description="Pretrain a model on preprocessed shards (launch with torchrun).",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", metavar="YAML", help="recipe file; flags override it")
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(section)
        types = _field_types(cls)
        for f in dataclasses.fields(cls):
            flags = f.metadata["flags"]
            dest = f"{section}.{f.name}"
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            help_ = f"{f.metadata['help']} (default: {default})"
            if _base_type(types[f.name]) is bool:
                group.add_argument(
                    *flags, dest=dest, action=argparse.BooleanOptionalAction, help=help_
                )
            else:
                group.add_argument(*flags, dest=dest, metavar=f.name.upper(), help=help_)
    return parser


def parse_args(argv: List[str]) -> RunConfig:
    """Defaults, then ``--config``, then flags; no validation yet (see :mod:`.preflight`)."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    config = RunConfig()
    if "config" in args:
        config = load_yaml(args.pop("config"), config)
    for dest, value in args.items():
        section, name = dest.split(".", 1)
        target = getattr(config, section)
        flag = next(f for f in dataclasses.fields(target) if f.name == name).metadata["flags"][0]
        setattr(target, name, _coerce(value, _field_types(type(target))[name], flag))
    return config
