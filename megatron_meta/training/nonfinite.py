"""A NaN or inf in the loss or a gradient: stop (default) or skip the step, for every optimizer.

Megatron-LM checks the loss and gradients before the optimizer steps
(``--check-for-nan-in-loss-and-grad``) and raises. megatron-core's bf16 optimizer has no loss
scaler and so no inf check of its own: it would apply a NaN step and every weight after it is
NaN. The check here runs after the gradients are reduced and before ``optimizer.step()``: the
weights are still those of the previous iteration, so nothing corrupt is ever saved.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from megatron_meta.errors import MegatronMetaError

CHOICES = ("stop", "skip")


class NonFiniteError(MegatronMetaError):
    """Training stopped on a NaN/inf loss or gradient (``--on-nonfinite stop``)."""


def grads_finite(model: torch.nn.Module) -> bool:
    """Whether megatron DDP's gradient buffers hold only finite values on this rank.

    One norm per contiguous buffer, as megatron DDP's own ``check_for_nan_in_grad`` does: a NaN
    or inf anywhere makes the norm non-finite, without a mask the size of the gradients.
    """
    for buffer in list(model.buffers) + list(getattr(model, "expert_parallel_buffers", [])):
        if not bool(torch.isfinite(torch.linalg.vector_norm(buffer.grad_data))):
            return False
    return True


def nonfinite(loss: float, model: torch.nn.Module, device: torch.device) -> bool:
    """True when the loss or any rank's gradient is NaN/inf; the same answer on every rank."""
    bad = not math.isfinite(loss) or not grads_finite(model)
    flag = torch.tensor([1.0 if bad else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def message(iteration: int, loss: float, last_saved) -> str:
    """One line: where it happened, what is safe, what to do."""
    saved = (
        f"the newest checkpoint (iteration {last_saved}) is untouched"
        if last_saved is not None else "nothing was saved"
    )
    return (
        f"iteration {iteration}: non-finite loss or gradient (loss {loss}); stopped before the "
        f"optimizer step, {saved}. Lower --lr or check the data; --on-nonfinite skip skips such "
        "steps instead"
    )
