"""Training figures: one log line per interval, ``metrics.jsonl``, TensorBoard, W&B.

Throughput is measured on wall time between the end of one iteration and the end of the next,
so it includes data loading, forward/backward, gradient reduction and the optimizer step. The
first iteration of a process (allocation, warm-up) is left out of the throughput of its window
unless it is the only iteration there. TFLOP/s count the model FLOPs of
:func:`megatron_meta.models.flops.flops_per_iteration`; MFU divides by the device's peak
(``null`` / ``n/a`` where no peak is known, e.g. on the CPU without ``--peak-tflops``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
KEYS = ("iteration", "loss", "lr", "grad_norm", "tokens_per_s", "tflops_per_gpu", "mfu")


@dataclass
class Throughput:
    """Accumulates timed iterations of the current log window."""

    tokens_per_iteration: int
    flops_per_iteration: float
    world_size: int
    peak_flops: Optional[float]
    _last: Optional[float] = None
    _seconds: float = 0.0
    _iterations: int = 0
    _first_pending: bool = True  # the process's first iteration (warm-up) is timed apart
    _first_seconds: float = 0.0

    def start(self) -> None:
        """(Re)start the clock: before the loop, and after validation or a checkpoint save."""
        self._last = time.perf_counter()

    def iteration_done(self) -> None:
        now = time.perf_counter()
        elapsed = now - (self._last if self._last is not None else now)
        self._last = now
        if self._first_pending:
            self._first_pending = False
            self._first_seconds = elapsed
            return
        self._seconds += elapsed
        self._iterations += 1

    def window(self) -> Dict[str, Optional[float]]:
        """tokens/s (total, per GPU), TFLOP/s per GPU, MFU of the window; then reset it."""
        seconds, iterations = self._seconds, self._iterations
        if iterations == 0 and self._first_seconds > 0:  # only the warm-up iteration ran
            seconds, iterations = self._first_seconds, 1
        self._seconds, self._iterations, self._first_seconds = 0.0, 0, 0.0
        if iterations == 0 or seconds <= 0:
            return {
                "tokens_per_s": None,
                "tokens_per_s_per_gpu": None,
                "tflops_per_gpu": None,
                "mfu": None,
            }
        tokens_per_s = self.tokens_per_iteration * iterations / seconds
        flops_per_gpu = self.flops_per_iteration * iterations / seconds / self.world_size
        return {
            "tokens_per_s": tokens_per_s,
            "tokens_per_s_per_gpu": tokens_per_s / self.world_size,
            "tflops_per_gpu": flops_per_gpu / 1e12,
            "mfu": flops_per_gpu / self.peak_flops if self.peak_flops else None,
        }


@dataclass
class LossWindow:
    """Mean training loss of the iterations since the last log line."""

    values: List[float] = field(default_factory=list)

    def add(self, loss: float) -> None:
        self.values.append(loss)

    def mean(self) -> float:
        mean = sum(self.values) / len(self.values) if self.values else float("nan")
        self.values = []
        return mean


def _fmt(value: Optional[float], spec: str) -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def format_line(record: Dict, train_iters: int) -> str:
    """Megatron-LM style log line."""
    parts = [
        f"iteration {record['iteration']:>7d}/{train_iters:<7d}",
        f"loss {_fmt(record['loss'], '.4f')}",
        f"lr {_fmt(record['lr'], '.3e')}",
        f"grad norm {_fmt(record['grad_norm'], '.3f')}",
        f"tokens/s {_fmt(record['tokens_per_s'], ',.0f')} "
        f"({_fmt(record.get('tokens_per_s_per_gpu'), ',.0f')} per GPU)",
        f"TFLOP/s/GPU {_fmt(record['tflops_per_gpu'], '.2f')}",
        f"MFU {_fmt(None if record['mfu'] is None else 100 * record['mfu'], '.1f')}"
        + ("%" if record["mfu"] is not None else ""),
    ]
    if record.get("val_loss"):
        parts.append("val loss " + " ".join(f"{k} {v:.4f}" for k, v in record["val_loss"].items()))
    return " | ".join(parts)


class MetricsWriter:
    """Rank 0 writes log lines, ``{save}/metrics.jsonl``, TensorBoard and W&B scalars."""

    def __init__(self, save_dir: Optional[str], tensorboard_dir: Optional[str], enabled: bool,
                 wandb=None):
        self.enabled = enabled
        self.wandb = wandb  # a WandbWriter (training/wandb_log.py) or None
        self.path = os.path.join(save_dir, METRICS_FILE) if save_dir and enabled else None
        self.tensorboard = None
        if enabled and tensorboard_dir:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(log_dir=tensorboard_dir)
            except ImportError:
                logger.warning("tensorboard is not installed: no TensorBoard events written")

    def truncate_after(self, iteration: int) -> None:
        """On resume, drop lines of iterations after the checkpoint (they will be redone)."""
        if not self.path or not os.path.exists(self.path):
            return
        kept = []
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    if json.loads(line)["iteration"] <= iteration:
                        kept.append(line)
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a crash
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(kept)
        os.replace(tmp, self.path)

    def write(self, record: Dict, train_iters: int) -> None:
        if not self.enabled:
            return
        logger.info(format_line(record, train_iters))
        if self.path:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            step = record["iteration"]
            for key in ("loss", "lr", "grad_norm", "tokens_per_s", "tflops_per_gpu", "mfu"):
                if record.get(key) is not None:
                    self.tensorboard.add_scalar(f"train/{key}", record[key], step)
            for region, loss in (record.get("val_loss") or {}).items():
                self.tensorboard.add_scalar(f"val_loss/{region}", loss, step)
            self.tensorboard.flush()
        if self.wandb is not None:
            self.wandb.log(record)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.close()
