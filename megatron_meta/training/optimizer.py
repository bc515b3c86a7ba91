"""AdamW, the learning-rate schedule, and gradient clipping.

* :func:`learning_rate` is the schedule as a pure function of the iteration: linear warmup to
  ``lr``, then cosine (or linear) decay to ``min_lr`` at ``lr_decay_iters``, flat afterwards.
  The trainer sets it on every parameter group before each step, so the schedule needs no
  state of its own in checkpoints.
* :func:`build_optimizer` returns megatron-core's optimizer (``get_megatron_optimizer``: fused
  Adam, mixed precision, optionally the distributed optimizer) where CUDA is present, and
  :class:`CpuAdamW` otherwise. megatron-core's optimizer allocates on ``device="cuda"`` in several
  places (its FP32 wrapper, the grad-norm helpers), so on the CPU we use torch's AdamW with the
  same parameter groups, the same gradient source (megatron DDP's ``param.main_grad``) and the
  same tensor-parallel-aware gradient norm.

Both expose ``step() -> (ok, grad_norm, _)``, ``zero_grad()``, ``param_groups``,
``sharded_state_dict(model_sharded_state_dict, is_loading, metadata)``, ``load_state_dict(sd)``
and ``reload_model_params()`` (after weights were loaded without optimizer state).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, Iterable, List, Tuple

import torch

from megatron_meta.errors import ConfigError
from megatron_meta.platform import cpu as platform
from megatron_meta.training.config import OptimizerConfig

logger = logging.getLogger(__name__)


def learning_rate(iteration: int, config: OptimizerConfig, train_iters: int) -> float:
    """Learning rate of optimizer step number ``iteration`` (1-based).

    Step ``i <= warmup`` uses ``lr * i / warmup`` (so the first step is not wasted at 0); after
    the warmup the rate decays from ``lr`` to ``min_lr`` over ``decay_iters - warmup`` steps.
    """
    warmup = config.lr_warmup_iters
    decay_end = config.lr_decay_iters or train_iters
    if warmup > 0 and iteration <= warmup:
        return config.lr * iteration / warmup
    if config.lr_decay_style == "constant":
        return config.lr
    if iteration >= decay_end:
        return config.min_lr
    progress = (iteration - warmup) / max(1, decay_end - warmup)
    if config.lr_decay_style == "linear":
        coeff = 1.0 - progress
    else:
        coeff = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.min_lr + coeff * (config.lr - config.min_lr)


def set_learning_rate(optimizer: Any, lr: float, weight_decay: float) -> None:
    """Apply this step's rate and decay to every group (``wd_mult`` 0 keeps norms undecayed)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
        group["weight_decay"] = weight_decay * group.get("wd_mult", 1.0)


def no_weight_decay(name: str, param: torch.nn.Parameter) -> bool:
    """Norm weights and biases are not decayed (megatron-core's default rule: 1-D or bias)."""
    return param.ndim == 1 or name.endswith(".bias")


def parameter_groups(model: torch.nn.Module, decay_all: bool = False) -> List[Dict[str, Any]]:
    """Two AdamW groups: decayed matrices and undecayed norms/biases (fixed order); with
    ``decay_all`` (``--weight-decay-all``) the second group is empty."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if not decay_all and no_weight_decay(name, param) else decay).append(param)
    return [
        {"params": decay, "wd_mult": 1.0, "lr_mult": 1.0},
        {"params": no_decay, "wd_mult": 0.0, "lr_mult": 1.0},
    ]


_NORM_ROW = 16384


def _sum_of_squares(grad: torch.Tensor) -> torch.Tensor:
    """Sum of squares of a gradient, accumulated in float64.

    One float32 pass over rows of ``_NORM_ROW`` elements, then the row norms are squared and summed
    in float64: about 1e-7 relative error, and 10x faster on the CPU than a float64 reduction (a
    single float32 norm over millions of elements would drift by 1e-3).
    """
    flat = grad.detach().reshape(-1)
    whole = flat.numel() // _NORM_ROW * _NORM_ROW
    rows = flat[:whole].view(-1, _NORM_ROW)
    total = torch.linalg.vector_norm(rows, dim=1, dtype=torch.float32).double().square().sum()
    if whole < flat.numel():
        rest = torch.linalg.vector_norm(flat[whole:], dtype=torch.float32).double()
        total = total + rest.square()
    return total


def grad_norm(params: Iterable[torch.nn.Parameter], model_parallel_group=None) -> float:
    """L2 norm of the full model's gradient, the same on every rank.

    A tensor-parallel shard counts once per shard; a parameter replicated on every TP rank (the
    norms) counts once, on TP rank 0; the squares are summed over the model-parallel group.
    Data-parallel replicas already hold the all-reduced gradient and are not summed again.
    """
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import param_is_not_tensor_parallel_duplicate
    from megatron.core.transformer.module import param_is_not_shared

    total = torch.zeros((), dtype=torch.float64)
    for p in params:
        grad = p.grad
        if grad is None or not param_is_not_shared(p):
            continue
        if param_is_not_tensor_parallel_duplicate(p):
            total += _sum_of_squares(grad).cpu()
    group = model_parallel_group or parallel_state.get_model_parallel_group()
    torch.distributed.all_reduce(total, group=group)
    return float(total.sqrt())


class CpuAdamW:
    """torch AdamW behind megatron-core's optimizer interface, for machines without CUDA.

    Gradients come from megatron DDP's ``param.main_grad`` buffers (DDP clears ``param.grad``
    after accumulating into them), are clipped by the global norm, then AdamW steps with
    decoupled weight decay. Checkpoint state is sharded like the model's parameters, so it
    reshards across tensor-parallel sizes.
    """

    def __init__(self, model: torch.nn.Module, config: OptimizerConfig):
        self.config = config
        self.optimizer = torch.optim.AdamW(
            parameter_groups(model, config.weight_decay_all),
            lr=config.lr,
            betas=(config.adam_beta1, config.adam_beta2),
            eps=config.adam_eps,
            weight_decay=config.weight_decay,
            # torch's fused CPU kernel: one pass over memory (4x faster than the single-tensor
            # path) and elementwise, so every TP/DP layout computes the same numbers.
            fused=True,
        )

    @property
    def param_groups(self) -> List[Dict[str, Any]]:
        return self.optimizer.param_groups

    def parameters(self) -> List[torch.nn.Parameter]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    @torch.no_grad()
    def step(self) -> Tuple[bool, float, None]:
        params = self.parameters()
        for p in params:
            if hasattr(p, "main_grad"):  # megatron DDP keeps the gradient here, not in .grad
                p.grad = p.main_grad.to(p.dtype)
        norm = grad_norm(params)
        if not math.isfinite(norm):
            logger.warning("gradient norm is %s: skipping this step", norm)
            self.zero_grad()
            return False, norm, None
        if self.config.clip_grad > 0:
            coeff = self.config.clip_grad / (norm + 1.0e-6)
            if coeff < 1.0:
                for p in params:
                    if p.grad is not None:
                        p.grad.mul_(coeff)
        self.optimizer.step()
        return True, norm, None

    # -- checkpointing: the same layout megatron-core's FP32Optimizer writes -------------------

    def _init_state(self) -> None:
        for p in self.parameters():
            if not self.optimizer.state[p]:
                self.optimizer.state[p] = {
                    "step": torch.zeros((), dtype=torch.float32),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }

    def reload_model_params(self) -> None:
        """Nothing to refresh: torch's AdamW steps the model's own (fp32) parameters."""

    def sharded_state_dict(
        self, model_sharded_state_dict: Dict, is_loading: bool = False, metadata=None
    ) -> Dict:
        from megatron.core.dist_checkpointing.optimizer import (
            get_param_id_to_sharded_param_map,
            optim_state_to_sharding_state,
        )

        if is_loading or not self.optimizer.state:
            self._init_state()  # a template with the right shapes to load into / a step-0 save
        state = self.optimizer.state_dict()
        id_map = get_param_id_to_sharded_param_map(model_sharded_state_dict, self.parameters())
        steps = {float(s["step"]) for s in state["state"].values() if "step" in s}
        if len(steps) > 1:
            raise RuntimeError(f"optimizer steps differ between parameters: {sorted(steps)}")
        optim_state_to_sharding_state(state, id_map, exclude_keys=("step",))
        state["state"]["common_step"] = steps.pop() if steps else 0.0
        return state

    def load_state_dict(self, state: Dict) -> None:
        step = float(state["state"].pop("common_step", 0.0))
        for param_state in state["state"].values():
            param_state["step"] = torch.tensor(step, dtype=torch.float32)
        self.optimizer.load_state_dict(state)


def optimizer_kind(optimizer: Any) -> str:
    """Which optimizer's state a checkpoint holds: ``cpu-adamw``, ``megatron-fp32``,
    ``megatron-bf16`` (fp32 main weights kept too), each ``-distributed`` or not: their states
    are laid out differently, so one cannot resume another's."""
    if isinstance(optimizer, CpuAdamW):
        return "cpu-adamw"
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    inner = getattr(optimizer, "chained_optimizers", [optimizer])
    distributed = any(isinstance(o, DistributedOptimizer) for o in inner)
    precision = "bf16" if any(getattr(o.config, "bf16", False) for o in inner) else "fp32"
    return f"megatron-{precision}" + ("-distributed" if distributed else "")


def build_optimizer(
    model: torch.nn.Module,
    config: OptimizerConfig,
    *,
    bf16: bool,
    use_distributed_optimizer: bool = False,
):
    """megatron-core's optimizer with CUDA, :class:`CpuAdamW` without; ``model`` is DDP-wrapped."""
    if not platform.cuda_available():
        if use_distributed_optimizer:
            raise ConfigError(
                "--use-distributed-optimizer needs CUDA (megatron-core's distributed optimizer); "
                "drop the flag on the CPU"
            )
        logger.info("optimizer: torch AdamW on megatron DDP's main_grad (CPU)")
        return CpuAdamW(model, config)

    import megatron.core.optimizer as megatron_optimizer
    from megatron.core.optimizer import OptimizerConfig as MegatronOptimizerConfig
    from megatron.core.optimizer import get_megatron_optimizer

    if use_distributed_optimizer and megatron_optimizer.USING_PYTORCH_OPTIMIZER:
        # Its fully reshardable checkpoint cannot be read back into torch's AdamW in 0.16.1
        # (the per-parameter 'step' is not restored: KeyError 'step' at load).
        raise ConfigError(
            "--use-distributed-optimizer needs Transformer Engine's or apex's fused Adam "
            "(megatron-core falls back to torch AdamW without them, whose distributed state it "
            "cannot reload); pip install -e '.[gpu]', or drop the flag"
        )

    megatron_config = MegatronOptimizerConfig(
        optimizer="adam",
        lr=config.lr,
        min_lr=config.min_lr,
        weight_decay=config.weight_decay,
        adam_beta1=config.adam_beta1,
        adam_beta2=config.adam_beta2,
        adam_eps=config.adam_eps,
        clip_grad=config.clip_grad,
        bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        use_distributed_optimizer=use_distributed_optimizer,
    )
    logger.info(
        "optimizer: megatron-core Adam (%s%s)",
        "bf16 with fp32 main weights" if bf16 else "fp32",
        ", distributed" if use_distributed_optimizer else "",
    )
    # No overrides (rather than None, which means megatron-core's standard ones) decays every
    # parameter, norms and biases included.
    overrides = {} if config.weight_decay_all else None
    return get_megatron_optimizer(megatron_config, [model], config_overrides=overrides)
