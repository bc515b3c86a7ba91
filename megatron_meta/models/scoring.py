"""The scoring core shared by training validation and ``megatron-meta evaluate``.

Given a megatron-core ``GPTModel`` and token sequences, each with a *loss start* ``k``, return per
sequence the summed negative log-likelihood of tokens ``k, k+1, ...`` (each predicted from the
tokens before it) and how many tokens that is. For evaluation, ``k`` is the index of the
``TITLE:`` token, so metadata is context and never scored; ``k = 1`` scores everything.

Sequences are batched in order, right-padded (causal attention never lets padding influence a
real position), and truncated to ``max_length`` tokens. Under tensor parallelism every rank of a
tensor-parallel group must call with the same sequences; the model's vocab-parallel loss makes
the result identical on all of them.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

ScoreFn = Callable[[List[List[int]], List[int]], Tuple[np.ndarray, np.ndarray]]


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def score_sequences(
    model: torch.nn.Module,
    sequences: Sequence[Sequence[int]],
    loss_starts: Sequence[int],
    *,
    micro_batch_size: int = 8,
    max_length: Optional[int] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Per sequence: (NLL sum in nats, number of scored tokens), as float64 / int64 arrays."""
    if len(sequences) != len(loss_starts):
        raise ValueError(f"{len(sequences)} sequences but {len(loss_starts)} loss starts")
    device = _device_of(model)
    was_training = model.training
    model.eval()
    nll = np.zeros(len(sequences), dtype=np.float64)
    count = np.zeros(len(sequences), dtype=np.int64)
    try:
        for first in range(0, len(sequences), micro_batch_size):
            batch = [
                list(s[:max_length] if max_length else s)
                for s in sequences[first : first + micro_batch_size]
            ]
            starts = [max(1, int(k)) for k in loss_starts[first : first + micro_batch_size]]
            width = max(len(s) for s in batch) - 1  # inputs are all but the last token
            if width < 1:
                continue
            ids = torch.zeros((len(batch), width + 1), dtype=torch.long)
            scored = torch.zeros((len(batch), width), dtype=torch.bool)
            for row, (seq, start) in enumerate(zip(batch, starts)):
                ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                # position t predicts token t + 1: scored when start <= t + 1 < len(seq)
                scored[row, max(0, start - 1) : max(0, len(seq) - 1)] = True
            ids = ids.to(device)
            positions = torch.arange(width, device=device).unsqueeze(0).expand(len(batch), -1)
            token_nll = model(ids[:, :-1], positions, None, labels=ids[:, 1:]).float().cpu()
            token_nll = torch.where(scored, token_nll, torch.zeros_like(token_nll))
            rows = slice(first, first + len(batch))
            nll[rows] = token_nll.double().sum(dim=1).numpy()
            count[rows] = scored.sum(dim=1).numpy()
    finally:
        model.train(was_training)
    return nll, count


def make_score_fn(
    model: torch.nn.Module, micro_batch_size: int = 8, max_length: Optional[int] = None
) -> ScoreFn:
    """``score(sequences, loss_starts)`` bound to ``model`` (the evaluation CLI's interface)."""

    def score(sequences: List[List[int]], loss_starts: List[int]) -> Tuple[np.ndarray, np.ndarray]:
        return score_sequences(
            model, sequences, loss_starts, micro_batch_size=micro_batch_size, max_length=max_length
        )

    return score
