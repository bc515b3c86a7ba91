"""Where megatron-meta adapts megatron-core to the machine it runs on (see :mod:`.cpu`)."""

from megatron_meta.platform.cpu import apply_cpu_accommodations, cuda_available, device

__all__ = ["apply_cpu_accommodations", "cuda_available", "device"]
