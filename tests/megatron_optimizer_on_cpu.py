"""``megatron-meta train`` with megatron-core's own optimizer (bf16 mixed precision, optionally
distributed) on the CPU, for tests of the GPU training path on a machine without CUDA.

megatron-core's optimizers run on the CPU but for two CUDA assumptions, bridged here and only
in this process: they accept a parameter only if ``param.type()`` names a ``torch.cuda`` tensor
type, and a few of their modules allocate on a literal ``device="cuda"`` (given a CPU view of
torch, as ``megatron_meta.platform.cpu`` does for the model's modules). The trainer's optimizer
choice and preflight's bf16 check then see CUDA; everything else (model, data, checkpoints) runs
on the CPU path. Without TE or apex, megatron-core steps with torch's AdamW.

    python tests/megatron_optimizer_on_cpu.py TRAIN-FLAGS...
"""

from __future__ import annotations

import importlib
import sys
import types

import torch

OPTIMIZER_MODULES = (
    "megatron.core.optimizer.distrib_optimizer",
    "megatron.core.optimizer.optimizer",
    "megatron.core.optimizer.clip_grads",
    "megatron.core.distributed.param_and_grad_buffer",
    "megatron.core.distributed.distributed_data_parallel",
    "megatron.core.utils",
)


def simulate() -> None:
    from megatron_meta.platform import cpu

    real_type = torch.Tensor.type

    def cuda_type_name(self, *args, **kwargs):
        if args or kwargs:
            return real_type(self, *args, **kwargs)
        return real_type(self).replace("torch.", "torch.cuda.", 1)

    torch.Tensor.type = cuda_type_name
    for name in OPTIMIZER_MODULES:
        importlib.import_module(name).torch = cpu.make_torch_view(literal_cuda=True)
    import megatron_meta.training.optimizer as optimizer
    import megatron_meta.training.preflight as preflight

    # The optimizer choice, and preflight's "--bf16 needs CUDA", see CUDA.
    optimizer.platform = preflight.platform = types.SimpleNamespace(cuda_available=lambda: True)


if __name__ == "__main__":  # dist_checkpointing starts a spawn-context Manager: keep this guard
    simulate()
    from megatron_meta.cli import run_guarded, setup_logging
    from megatron_meta.training.cli import main

    setup_logging()
    sys.exit(run_guarded(main, sys.argv[1:], "train"))
