"""The CPU accommodations of megatron_meta.platform.cpu, and guards against megatron-core upgrades.

These fail when a megatron-core release moves or removes what the accommodations patch, when a
patched module no longer holds the CUDA call it is patched for (the list is stale: re-check it),
or when the training path stops running on the CPU (TP=2 over gloo with megatron's DDP).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.multiprocessing as mp

from megatron_meta.platform import cpu

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _source(module_name: str) -> str:
    return inspect.getsource(importlib.import_module(module_name))


@pytest.mark.parametrize("module_name", sorted(cpu.CURRENT_DEVICE_MODULES))
def test_current_device_modules_still_call_current_device(module_name):
    source = _source(module_name)
    assert "torch.cuda.current_device()" in source, f"{module_name}: patch no longer needed?"
    assert "\nimport torch\n" in source, f"{module_name} no longer imports torch as `torch`"


@pytest.mark.parametrize("module_name", sorted(cpu.LITERAL_CUDA_MODULES))
def test_literal_cuda_modules_still_allocate_on_cuda(module_name):
    source = _source(module_name)
    assert 'device="cuda"' in source or "device='cuda'" in source, module_name
    assert "\nimport torch\n" in source, module_name


@pytest.mark.parametrize("module_name", sorted(getattr(cpu, "CHECKPOINT_MODULES", {})))
def test_checkpoint_modules_still_use_cuda(module_name):
    source = _source(module_name)
    assert "torch.cuda." in source or 'device="cuda"' in source, module_name
    assert "\nimport torch\n" in source, module_name


def test_rng_module_still_has_the_patched_names_and_signatures():
    module = importlib.import_module(cpu.RNG_MODULE)
    for name in cpu.RNG_PATCHED_NAMES:
        assert hasattr(module, name), name
    # The replacements must accept what megatron passes to the originals: read the originals'
    # parameters from the installed source (the module attributes may already be replaced).
    tree = ast.parse(_source(cpu.RNG_MODULE))
    params = {
        node.name: [a.arg for a in node.args.args]
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
    }
    assert params["_get_cuda_rng_state"] == ["device", "clone", "graph_safe"]
    assert params["_set_cuda_rng_state"] == ["new_state", "device", "graph_safe"]
    for replacement, original in ((cpu._cpu_get_rng_state, "_get_cuda_rng_state"),
                                  (cpu._cpu_set_rng_state, "_set_cuda_rng_state")):
        assert list(inspect.signature(replacement).parameters) == params[original]
    # The tracker's fork() and its state bookkeeping, which the CPU tracker keeps using.
    tracker = module.CudaRNGStatesTracker()
    attrs = ("states_", "seeds_", "_current_state_name", "add", "fork", "get_states", "set_states")
    for attr in attrs:
        assert hasattr(tracker, attr), attr
    assert "torch.cuda.manual_seed(" in _source(cpu.RNG_MODULE)
    assert "torch.cuda.get_rng_state()" in _source(cpu.RNG_MODULE)


def test_decision_logic():
    assert cpu.should_accommodate(has_cuda=False) is True
    assert cpu.should_accommodate(has_cuda=True) is False


def test_inactive_when_cuda_is_available(tmp_path):
    """In a fresh interpreter that believes CUDA is present, nothing in megatron-core changes."""
    script = textwrap.dedent(
        f"""
        import os, importlib, torch
        torch.cuda.is_available = lambda: True  # what a GPU machine reports
        torch.cuda.device_count = lambda: 2
        os.environ["LOCAL_RANK"] = "1"
        from megatron_meta.platform import cpu
        names = (list(cpu.CURRENT_DEVICE_MODULES) + list(cpu.LITERAL_CUDA_MODULES)
                 + list(getattr(cpu, "CHECKPOINT_MODULES", {{}})))
        originals = {{n: importlib.import_module(n).torch for n in names}}
        random = importlib.import_module(cpu.RNG_MODULE)
        tracker_cls, get_state = random.CudaRNGStatesTracker, random._get_cuda_rng_state
        cpu.apply_cpu_accommodations()
        cpu.apply_cpu_accommodations()
        assert not cpu.is_applied()
        assert all(importlib.import_module(n).torch is torch for n in originals), "patched"
        assert random.torch is torch
        assert random.CudaRNGStatesTracker is tracker_cls
        assert random._get_cuda_rng_state is get_state
        assert cpu.device() == torch.device("cuda", 1), cpu.device()
        print("UNTOUCHED")
        """
    )
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "UNTOUCHED" in result.stdout


def test_apply_is_idempotent_and_narrow():
    cpu.apply_cpu_accommodations()
    views = {n: importlib.import_module(n).torch for n in cpu.CURRENT_DEVICE_MODULES}
    random = importlib.import_module(cpu.RNG_MODULE)
    tracker_cls = random.CudaRNGStatesTracker
    cpu.apply_cpu_accommodations()
    assert cpu.is_applied()
    for name, view in views.items():
        assert importlib.import_module(name).torch is view, name
        assert view.cuda.current_device() == torch.device("cpu")
        assert view.Tensor is torch.Tensor and view.nn is torch.nn
    assert random.CudaRNGStatesTracker is tracker_cls  # not wrapped twice
    assert tracker_cls.__mro__[1].__name__ == "CudaRNGStatesTracker"
    # The real torch is untouched: only megatron-core's modules see the CPU stand-ins.
    assert torch.cuda.current_device.__module__ == "torch.cuda"
    assert importlib.import_module("megatron.core.parallel_state").torch is torch
    # Literal device="cuda" allocations land on the CPU in the patched modules.
    from megatron.core.transformer.utils import get_default_causal_mask

    mask = get_default_causal_mask(4)
    assert mask.device.type == "cpu" and mask.tolist()[0] == [False, True, True, True]


def test_rng_tracker_fork_on_cpu(caplog):
    from megatron.core import tensor_parallel

    cpu.apply_cpu_accommodations()

    def seed_and_draw(tp_rank):
        tensor_parallel.model_parallel_cuda_manual_seed(123, tp_rank=tp_rank, ep_rank=0, etp_rank=0)
        tracker = tensor_parallel.get_cuda_rng_tracker()
        with tracker.fork():
            forked = torch.rand(4)
            with tracker.fork(tensor_parallel.random.get_data_parallel_rng_tracker_name()):
                nested = torch.rand(4)
            forked_after_nested = torch.rand(4)
        default = torch.rand(4)
        return forked, nested, forked_after_nested, default

    with caplog.at_level(logging.WARNING):
        a = seed_and_draw(tp_rank=0)
        b = seed_and_draw(tp_rank=0)
        c = seed_and_draw(tp_rank=1)
    for x, y in zip(a, b):
        assert torch.equal(x, y)  # reproducible
    assert not torch.equal(a[0], c[0])  # model-parallel stream differs per TP rank
    assert torch.equal(a[3], c[3])  # the default (data-parallel) stream does not
    # The fork left the default generator where plain seeding leaves it.
    torch.manual_seed(123)
    assert torch.equal(a[3], torch.rand(4))
    assert not torch.equal(a[0], a[2])  # the forked stream advanced across the nested fork
    assert "CPU RNG state changed" not in caplog.text


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tp2_ddp_worker(rank: int, world: int, port: int) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), CUDA_VISIBLE_DEVICES="",
    )
    torch.set_num_threads(1)
    import torch.distributed as dist
    from megatron.core import parallel_state, tensor_parallel
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig

    from megatron_meta.models import build_model, get_preset
    from megatron_meta.parallel import destroy_parallel, initialize_parallel

    try:
        info = initialize_parallel(2, seed=5)
        assert info.device == torch.device("cpu") and info.tp_rank == rank
        model = build_model(get_preset("tiny"), vocab_size=500, seq_length=16, tp_size=2)
        ddp = DistributedDataParallel(
            config=model.config, ddp_config=DistributedDataParallelConfig(), module=model
        )
        tokens = torch.randint(0, 500, (2, 16), generator=torch.Generator().manual_seed(0))
        positions = torch.arange(16).unsqueeze(0).expand(2, -1)
        loss = ddp(tokens, positions, None, labels=tokens).mean()
        assert torch.isfinite(loss)
        loss.backward()
        ddp.finish_grad_sync()
        for name, p in model.named_parameters():
            # megatron's DDP accumulates into param.main_grad and leaves param.grad empty
            assert p.grad is None, name
            assert torch.isfinite(p.main_grad).all() and p.main_grad.abs().sum() > 0, name

        # The tracker's model-parallel stream differs across TP ranks, the default one does not.
        group = parallel_state.get_tensor_model_parallel_group()
        with tensor_parallel.get_cuda_rng_tracker().fork():
            forked = torch.rand(8)
        default = torch.rand(8)
        both = [torch.empty(8) for _ in range(2)]
        dist.all_gather(both, forked, group=group)
        assert not torch.equal(both[0], both[1])
        dist.all_gather(both, default, group=group)
        assert torch.equal(both[0], both[1])
    finally:
        destroy_parallel()


@pytest.mark.distributed
def test_tp2_forward_backward_with_megatron_ddp_over_gloo():
    mp.spawn(_tp2_ddp_worker, args=(2, _free_port()), nprocs=2, join=True)
