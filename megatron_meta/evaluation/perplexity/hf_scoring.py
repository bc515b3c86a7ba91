"""The perplexity scoring interface (:data:`perplexity.ScoreFn`, :class:`perplexity.Codec`) for a
Hugging Face causal LM, so the perplexity studies run on HF folders as well as on checkpoints."""

from __future__ import annotations

from typing import List, Tuple

import numpy as np
import torch

from megatron_meta.evaluation.perplexity.evaluate import Codec, ScoreFn


def hf_codec(tokenizer) -> Codec:
    """Plain encode/decode (no special tokens added); the end-of-text token separates documents."""
    eod = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    return Codec(lambda s: tokenizer.encode(s, add_special_tokens=False),
                 lambda ids: tokenizer.decode(ids), int(eod))


def hf_score_fn(model, micro_batch_size: int = 8) -> ScoreFn:
    """``score(sequences, loss_starts)``: NLL sum and count of tokens ``k, k+1, ...`` per sequence."""

    @torch.no_grad()
    def score(sequences: List[List[int]], starts: List[int]) -> Tuple[np.ndarray, np.ndarray]:
        nll = np.zeros(len(sequences))
        count = np.zeros(len(sequences), dtype=np.int64)
        for first in range(0, len(sequences), micro_batch_size):
            batch = sequences[first:first + micro_batch_size]
            width = max(len(s) for s in batch)
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            for i, s in enumerate(batch):
                ids[i, :len(s)] = torch.tensor(s)  # right padding never reaches a real position
            logp = torch.log_softmax(model(ids[:, :-1]).logits.double(), dim=-1)
            token = logp.gather(2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            for i, s in enumerate(batch):
                k = max(1, int(starts[first + i]))
                nll[first + i] = -float(token[i, k - 1:len(s) - 1].sum())
                count[first + i] = max(0, len(s) - k)
        return nll, count

    return score
