"""The LoRA instruction-tuning recipe: a typed dataclass, loaded from YAML and overridden by flags.

Defaults are the paper's (arXiv 2601.15236): r 256, alpha 16, dropout 0.05 on the q, k, v, o,
gate, up and down projections; 3 epochs at batch 2 x accumulation 8, lr 2e-4; an 80/20 split.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional

import yaml

from megatron_meta.errors import ConfigError

PAPER_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclasses.dataclass
class LoraRecipe:
    """Every setting of ``megatron-meta finetune`` (flag names in parentheses)."""

    lora_r: int = 256
    """LoRA rank (``--lora-r``)."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator; the update is scaled by alpha / r (``--lora-alpha``)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input (``--lora-dropout``)."""
    target_modules: List[str] = dataclasses.field(default_factory=lambda: list(PAPER_TARGETS))
    """Module names that get adapters (``--target-modules``, comma list)."""
    epochs: float = 3.0
    """Passes over the training split (``--epochs``)."""
    micro_batch_size: int = 2
    """Examples per device per step (``--micro-batch-size``)."""
    gradient_accumulation_steps: int = 8
    """Micro-batches per optimizer step (``--gradient-accumulation-steps``)."""
    lr: float = 2e-4
    """Peak learning rate, AdamW, linear decay (``--lr``)."""
    warmup_ratio: float = 0.0
    """Fraction of steps of linear warmup (``--warmup-ratio``)."""
    weight_decay: float = 0.0
    """AdamW weight decay (``--weight-decay``)."""
    seq_length: int = 512
    """Tokens kept per example (prompt + response), cut at the end (``--seq-length``)."""
    valid_fraction: float = 0.2
    """Share of examples held out for the eval loss (``--valid-fraction``)."""
    seed: int = 42
    """Split, wrapping, dropout and data-order seed (``--seed``)."""
    metadata_wrap: bool = False
    """Wrap each prompt in made-up metadata, the paper's metadata variant (``--metadata-wrap``)."""
    save_steps: int = 50
    """Optimizer steps between resumable checkpoints (``--save-steps``)."""
    save_total_limit: int = 2
    """Checkpoints kept (``--save-total-limit``)."""
    logging_steps: int = 1
    """Optimizer steps between loss lines (``--logging-steps``)."""
    max_examples: Optional[int] = None
    """Use only the first N records of the data file (``--max-examples``)."""
    protocol: str = "ours"
    """``paper``: the authors' prompts (Alpaca system message, ``### Instruction:`` user turn,
    ``CONTENT:`` prefix, Llama-3 template without one), loss on every token (``--protocol``)."""

    def validate(self) -> "LoraRecipe":
        for name in ("lora_r", "micro_batch_size", "gradient_accumulation_steps", "seq_length",
                     "save_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        if not 0.0 < self.valid_fraction < 1.0:
            raise ConfigError(f"--valid-fraction {self.valid_fraction}: must be between 0 and 1")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"--lora-dropout {self.lora_dropout}: must be in [0, 1)")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"--warmup-ratio {self.warmup_ratio}: must be in [0, 1)")
        if self.epochs <= 0 or self.lr <= 0:
            raise ConfigError("--epochs and --lr must be positive")
        if self.protocol not in ("ours", "paper"):
            raise ConfigError(f"--protocol {self.protocol}: choose ours or paper")
        if not self.target_modules:
            raise ConfigError("--target-modules is empty; e.g. q_proj,k_proj,v_proj,o_proj")
        return self


FIELDS = {f.name: f for f in dataclasses.fields(LoraRecipe)}


def load_recipe(path: Optional[str]) -> LoraRecipe:
    """The recipe of YAML file ``path`` (flat keys as the dataclass fields), or the defaults."""
    if not path:
        return LoraRecipe()
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"--config {path}: cannot read the recipe ({e})") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {path}: expected a mapping of settings")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise ConfigError(f"--config {path}: unknown setting(s) {', '.join(unknown)}; "
                          f"known: {', '.join(FIELDS)}")
    return LoraRecipe(**raw)
