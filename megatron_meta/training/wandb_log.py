"""Weights & Biases logging with Megatron-LM's flags (the authors trained with it).

``--wandb-project P`` turns it on (rank 0 only); ``--wandb-exp-name`` names the run (default: the
``--save`` folder's name); ``--wandb-save-dir`` holds W&B's files (default: ``SAVE/wandb``).
``WANDB_MODE=offline`` (W&B's own variable) writes the run to that folder without a network, to
be uploaded later with ``wandb sync``. The same figures as ``metrics.jsonl`` are logged, with
the iteration as the step; TensorBoard is unaffected.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

from megatron_meta.errors import ConfigError

SCALARS = ("loss", "lr", "grad_norm", "tokens_per_s", "tokens_per_s_per_gpu", "tflops_per_gpu", "mfu")


class WandbWriter:
    """One W&B run; :meth:`log` takes the records the metrics writer writes."""

    def __init__(self, project: str, name: Optional[str], save_dir: Optional[str],
                 config: Dict[str, Any]):
        try:
            import wandb
        except ImportError as e:
            raise ConfigError("--wandb-project: the wandb package is not installed; "
                              "pip install 'megatron-meta[wandb]' (or drop the flag)") from e
        if save_dir:
            os.makedirs(save_dir, exist_ok=True)
        self.run = wandb.init(project=project, name=name, dir=save_dir, config=config)

    def log(self, record: Dict[str, Any]) -> None:
        values = {f"train/{k}": record[k] for k in SCALARS if record.get(k) is not None}
        for region, loss in (record.get("val_loss") or {}).items():
            values[f"val_loss/{region}"] = loss
        self.run.log(values, step=int(record["iteration"]))

    def close(self) -> None:
        self.run.finish()


def wandb_writer(logging_config, save: Optional[str], config: Dict[str, Any]) -> Optional[WandbWriter]:
    """The run's writer, or None without ``--wandb-project``."""
    if not logging_config.wandb_project:
        return None
    save_dir = logging_config.wandb_save_dir or (os.path.join(save, "wandb") if save else None)
    name = logging_config.wandb_exp_name or (os.path.basename(os.path.normpath(save)) if save else None)
    return WandbWriter(logging_config.wandb_project, name, save_dir, config)
