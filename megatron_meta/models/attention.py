"""Core attention for megatron-core's local layer spec through ``torch``'s fused SDPA.

megatron-core's local ``DotProductAttention`` materializes the ``[b, heads, s, s]`` scores
(baddbmm), builds and applies a causal mask, softmaxes and multiplies again, and repeats the
keys/values of every query group. ``torch.nn.functional.scaled_dot_product_attention`` does the
same computation in one fused kernel (flash attention on the CPU, too) with grouped-query
attention built in; it is what Hugging Face's Llama uses by default. This module is a drop-in
``core_attention`` submodule: same constructor and forward signature, same input layout
``[s, b, heads, head_dim]`` and output ``[s, b, heads * head_dim]`` as ``DotProductAttention``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core import parallel_state, tensor_parallel
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule

from megatron_meta.errors import ConfigError


class SDPACoreAttention(MegatronModule):
    """Causal (or masked) self-attention per TP shard with ``F.scaled_dot_product_attention``."""

    def __init__(
        self,
        config,
        layer_number: int,
        attn_mask_type,
        attention_type: str,
        attention_dropout: Optional[float] = None,
        softmax_scale: Optional[float] = None,
        cp_comm_type: Optional[str] = None,
        pg_collection=None,
    ):
        super().__init__(config=config)
        unsupported = [
            name for name, bad in (
                ("context parallelism", config.context_parallel_size != 1),
                (f"softmax_type={config.softmax_type}", config.softmax_type != "vanilla"),
                ("sliding-window attention", config.window_size is not None),
            ) if bad
        ]
        if unsupported:
            raise ConfigError(f"SDPA core attention does not support {', '.join(unsupported)}; "
                              "use --transformer-impl transformer_engine")
        tp = pg_collection.tp.size() if pg_collection is not None else (
            parallel_state.get_tensor_model_parallel_world_size())
        self.heads = config.num_attention_heads // tp
        self.groups = config.num_query_groups // tp
        self.attn_mask_type = attn_mask_type
        self.dropout = config.attention_dropout if attention_dropout is None else attention_dropout
        # megatron's query-key layer scaling divides the scores by the layer number and multiplies
        # them back inside the softmax: the net scale is 1/sqrt(head_dim) either way.
        if softmax_scale is None:
            softmax_scale = 1.0 / math.sqrt(config.kv_channels)
        self.scale = softmax_scale

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        attn_mask_type=None,
        attention_bias: Optional[torch.Tensor] = None,
        packed_seq_params=None,
    ) -> torch.Tensor:
        if packed_seq_params is not None or attention_bias is not None:
            raise ConfigError("SDPA core attention does not take packed sequences or a bias")
        sq, b = query.shape[0], query.shape[1]
        # [s, b, n, d] -> [b, n, s, d]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        mask_type = attn_mask_type if attn_mask_type is not None else self.attn_mask_type
        if attention_mask is not None:
            mask = ~attention_mask  # megatron's masks are True where attention is *not* allowed
            causal = False
        else:
            mask, causal = None, mask_type == AttnMaskType.causal and sq > 1
        dropout = self.dropout if self.training else 0.0
        rng = (tensor_parallel.get_cuda_rng_tracker().fork() if dropout > 0
               and not self.config.sequence_parallel else contextlib.nullcontext())
        with rng:
            context = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal, scale=self.scale,
                enable_gqa=self.heads != self.groups,
            )
        # [b, n, s, d] -> [s, b, n * d]
        return context.permute(2, 0, 1, 3).reshape(sq, b, -1)

