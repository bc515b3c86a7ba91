"""Every accommodation megatron-core needs to run on a machine without CUDA, in one place.

megatron-core 0.16.1 assumes CUDA in a handful of spots on the path a Llama-style ``GPTModel``
takes through training (FACTS.md section 2). :func:`apply_cpu_accommodations` makes that path run
on the CPU with gloo. It does nothing when CUDA is available, and calling it again is harmless.

How it patches, narrowly:

* No global ``torch`` attribute is changed. Each megatron-core module listed below gets its *own*
  view of ``torch`` (:class:`_TorchView`): a module object holding torch's attributes, with
  ``torch.cuda`` replaced by a view whose ``current_device()`` returns the CPU device and, where the
  module allocates on a literal ``device="cuda"``, tensor factories that put ``"cuda"`` tensors on
  the CPU. Everything else in the process (our code, user code, other megatron modules) sees the
  real torch.
* The RNG tracker (``megatron/core/tensor_parallel/random.py``) keeps its states on the CPU
  generator: the module's private get/set-state helpers and its tracker class are replaced.

``tests/test_platform_cpu.py`` fails if a megatron-core upgrade removes a patched name, adds a
CUDA call to a module on the training path that is not patched here, or breaks a tiny model's
forward/backward under TP=2 on gloo.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import types
from typing import Any, Callable, Dict, Tuple

import torch

logger = logging.getLogger(__name__)

_CPU = torch.device("cpu")

# megatron-core modules calling ``torch.cuda.current_device()`` on the CPU training path, and why.
CURRENT_DEVICE_MODULES: Dict[str, str] = {
    "megatron.core.tensor_parallel.layers": "parameter and gather buffers of column/row-parallel "
    "linears and the vocab-parallel embedding are allocated on the current device",
    "megatron.core.tensor_parallel.mappings": "TP all-gather / reduce-scatter output buffers",
    "megatron.core.tensor_parallel.utils": "split/gather of 1-D chunks (activation recompute)",
    "megatron.core.utils": "GlobalMemoryBuffer.get_tensor(), the attention score buffer of the "
    "local DotProductAttention",
    "megatron.core.models.common.embeddings.rotary_pos_embedding": "RoPE inverse frequencies "
    "are moved to the current device on every forward",
    "megatron.core.transformer.dot_product_attention": "softmax offset buffers",
    "megatron.core.transformer.attention": "QKV buffers of the attention block",
    "megatron.core.transformer.transformer_layer": "layer-level buffers",
    "megatron.core.distributed.param_and_grad_buffer": "megatron DDP's contiguous param/grad "
    "buffers",
}

# megatron-core modules that allocate on a literal ``device="cuda"`` on the CPU training path.
LITERAL_CUDA_MODULES: Dict[str, str] = {
    "megatron.core.transformer.utils": "get_default_causal_mask() builds the causal mask with "
    "torch.ones(..., device='cuda'); the local attention's softmax calls it when no mask is given",
    "megatron.core.pipeline_parallel.schedules": "forward_backward_no_pipelining() counts tokens "
    "in torch.zeros([], device='cuda')",
    "megatron.core.optimizer.clip_grads": "grad-norm and zero-count accumulators are "
    "torch.zeros/torch.tensor(..., device='cuda')",
    "megatron.core.optimizer.optimizer": "FP32Optimizer's unit loss scale is "
    "torch.tensor([1.0], device='cuda')",
}

# megatron-core's checkpoint writer (dist_checkpointing.save) on the CPU path. Added by the training
# helper: filesystem_async.preload_tensors() always calls torch.cuda.synchronize() after its
# (non-blocking) copies to host memory, and state_dict_saver broadcasts its failure flag from a
# tensor on torch.cuda.current_device(). Module -> (literal_cuda, torch.cuda overrides, why).
CHECKPOINT_MODULES: Dict[str, Tuple[bool, Dict[str, Any], str]] = {
    "megatron.core.dist_checkpointing.strategies.filesystem_async": (
        False, {"synchronize": lambda *args, **kwargs: None},
        "preload_tensors() synchronizes CUDA after copying tensors to host memory",
    ),
    "megatron.core.dist_checkpointing.strategies.state_dict_saver": (
        True, {}, "write-failure flag and metadata-reuse check are allocated on the GPU",
    ),
}

RNG_MODULE = "megatron.core.tensor_parallel.random"
# Names in RNG_MODULE this file replaces or relies on; the tests check they still exist.
RNG_PATCHED_NAMES: Tuple[str, ...] = (
    "_get_cuda_rng_state",
    "_set_cuda_rng_state",
    "CudaRNGStatesTracker",
    "model_parallel_cuda_manual_seed",
    "get_cuda_rng_tracker",
    "_CUDA_RNG_STATE_TRACKER",
)

_applied = False


def cuda_available() -> bool:
    """Whether this process can use CUDA (respects ``CUDA_VISIBLE_DEVICES=""``)."""
    return torch.cuda.is_available()


def should_accommodate(has_cuda: bool) -> bool:
    """The decision, separate from its side effects so that it can be tested without a GPU."""
    return not has_cuda


def gpu_index(local_rank: int, device_count: int) -> int:
    """The visible GPU of the process with this ``LOCAL_RANK``.

    One GPU per process (``srun --gpus-per-task=1``, or ``CUDA_VISIBLE_DEVICES`` set per task)
    shows each process a single device, ``cuda:0``, whatever its local rank.
    """
    if device_count == 1:
        return 0
    if not 0 <= local_rank < device_count:
        from megatron_meta.errors import ConfigError

        raise ConfigError(
            f"LOCAL_RANK {local_rank} but this process sees {device_count} GPUs: launch at most "
            f"{device_count} processes per node (torchrun --nproc-per-node), or show each "
            "process one GPU (CUDA_VISIBLE_DEVICES / srun --gpus-per-task=1)"
        )
    return local_rank


def device() -> torch.device:
    """The device this rank computes on: its GPU (:func:`gpu_index`) with CUDA, else the CPU."""
    if cuda_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device("cuda", gpu_index(local_rank, torch.cuda.device_count()))
    return _CPU


def is_applied() -> bool:
    return _applied


def apply_cpu_accommodations() -> None:
    """Make megatron-core's training path run on the CPU. No-op with CUDA; idempotent."""
    global _applied
    if not should_accommodate(cuda_available()) or _applied:
        return
    for name in CURRENT_DEVICE_MODULES:
        _give_module_torch_view(name, literal_cuda=False)
    for name in LITERAL_CUDA_MODULES:
        _give_module_torch_view(name, literal_cuda=True)
    for name, (literal_cuda, cuda_overrides, _) in CHECKPOINT_MODULES.items():
        _give_module_torch_view(name, literal_cuda=literal_cuda, cuda_overrides=cuda_overrides)
    _install_cpu_rng()
    _applied = True
    logger.info(
        "no CUDA: megatron-core runs on the CPU (%d modules see a CPU torch.cuda, RNG tracker on "
        "the CPU generator)",
        len(CURRENT_DEVICE_MODULES) + len(LITERAL_CUDA_MODULES) + len(CHECKPOINT_MODULES)
    )


# --------------------------------------------------------------------------------------------
# torch views


class _TorchView(types.ModuleType):
    """A stand-in for a module object (``torch`` or ``torch.cuda``) with a few names overridden.

    Attributes are copied into the view's own ``__dict__`` so lookups cost what they cost on the
    real module; names the real module creates lazily later fall through ``__getattr__``.
    """

    def __init__(self, real: types.ModuleType, overrides: Dict[str, Any]):
        super().__init__(real.__name__, real.__doc__)
        self.__dict__.update(real.__dict__)
        self.__dict__.update(overrides)
        self.__dict__["_megatron_meta_real"] = real

    def __getattr__(self, item: str) -> Any:
        return getattr(self.__dict__["_megatron_meta_real"], item)


def _cpu_current_device() -> torch.device:
    return _CPU


def _is_cuda(dev: Any) -> bool:
    if isinstance(dev, torch.device):
        return dev.type == "cuda"
    if isinstance(dev, str):
        return dev.split(":")[0] == "cuda"
    return False


def _cpu_factory(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Wrap a tensor factory so that ``device="cuda"`` means the CPU."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> torch.Tensor:
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = _CPU
        return fn(*args, **kwargs)

    return wrapper


_FACTORIES = ("zeros", "ones", "empty", "tensor", "full", "arange")


def make_torch_view(literal_cuda: bool, cuda_overrides: Dict[str, Any] | None = None) -> _TorchView:
    """A ``torch`` whose ``cuda.current_device()`` is the CPU (and factories, if asked, too)."""
    cuda_view = _TorchView(
        torch.cuda, {"current_device": _cpu_current_device, **(cuda_overrides or {})}
    )
    overrides: Dict[str, Any] = {"cuda": cuda_view}
    if literal_cuda:
        overrides.update({name: _cpu_factory(getattr(torch, name)) for name in _FACTORIES})
    return _TorchView(torch, overrides)


def _give_module_torch_view(
    module_name: str, literal_cuda: bool, cuda_overrides: Dict[str, Any] | None = None
) -> None:
    module = importlib.import_module(module_name)
    current = getattr(module, "torch", None)
    if isinstance(current, _TorchView):
        return
    if current is not torch:
        raise RuntimeError(
            f"{module_name} no longer imports torch as `torch`: the CPU accommodation in "
            f"{__name__} needs updating for this megatron-core version"
        )
    module.torch = make_torch_view(literal_cuda, cuda_overrides)


# --------------------------------------------------------------------------------------------
# RNG tracker on the CPU generator


def _cpu_get_rng_state(
    device: Any = "cuda", clone: bool = False, graph_safe: bool = False
) -> torch.Tensor:
    return torch.get_rng_state()


def _cpu_set_rng_state(new_state: torch.Tensor, device: Any = -1, graph_safe: bool = False) -> None:
    torch.set_rng_state(new_state)


def _cpu_tracker_class(base: type) -> type:
    """megatron's tracker with ``fork`` on the CPU generator.

    The base ``fork`` warns whenever the CPU RNG state changes inside the fork; on a CPU the forked
    generator *is* the CPU generator, so it would warn on every random op. Same state bookkeeping
    otherwise (including nested forks of different names).
    """

    class CpuRNGStatesTracker(base):  # type: ignore[valid-type, misc]
        @contextlib.contextmanager
        def fork(self, name: str = "model-parallel-rng"):
            if name not in self.states_:
                raise Exception(f"cuda rng state {name} is not added")
            orig_state = torch.get_rng_state()
            orig_name = self._current_state_name
            if orig_name != "default-rng":
                self.states_[orig_name] = orig_state
            torch.set_rng_state(self.states_[name])
            self._current_state_name = name
            try:
                yield
            finally:
                self.states_[name] = torch.get_rng_state()
                if orig_name != "default-rng":
                    orig_state = self.states_[orig_name]
                torch.set_rng_state(orig_state)
                self._current_state_name = orig_name

    CpuRNGStatesTracker.__qualname__ = CpuRNGStatesTracker.__name__
    return CpuRNGStatesTracker


def _install_cpu_rng() -> None:
    random = importlib.import_module(RNG_MODULE)
    missing = [n for n in RNG_PATCHED_NAMES if not hasattr(random, n)]
    if missing:
        raise RuntimeError(
            f"{RNG_MODULE} lacks {missing}: the CPU accommodation in {__name__} needs updating"
        )
    # torch.cuda.{get_rng_state,manual_seed} in tracker.add() and model_parallel_cuda_manual_seed()
    random.torch = make_torch_view(
        literal_cuda=False,
        cuda_overrides={"get_rng_state": _cpu_get_rng_state, "manual_seed": torch.manual_seed},
    )
    # Activation recompute (_get_all_rng_states / _set_all_rng_states) and the tracker use these.
    random._get_cuda_rng_state = _cpu_get_rng_state
    random._set_cuda_rng_state = _cpu_set_rng_state
    if not getattr(random.CudaRNGStatesTracker, "_megatron_meta_cpu", False):
        cpu_cls = _cpu_tracker_class(random.CudaRNGStatesTracker)
        cpu_cls._megatron_meta_cpu = True
        random.CudaRNGStatesTracker = cpu_cls  # initialize_rng_tracker() builds this from now on
        tracker = random._CUDA_RNG_STATE_TRACKER
        if tracker is not None and type(tracker) is cpu_cls.__mro__[1]:
            tracker.__class__ = cpu_cls  # a tracker made before we were applied
