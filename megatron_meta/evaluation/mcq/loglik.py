"""Log-likelihood of answer options given a shared context, on a Hugging Face causal LM.

Tokenization follows lm-evaluation-harness exactly (so the two agree question by question): the
context and ``context + continuation`` are encoded with the tokenizer's defaults, the continuation
is the tail of the latter after ``len(context tokens)``, and the model reads
``context tokens + continuation tokens``.

Unlike the harness, which runs every (context, option) pair as its own sequence, the shared
context runs once and its key/value cache is repeated for the options, which are then scored as
one short batch: with four options and a context of ~80 tokens that is about a third of the work.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

OptionScore = Tuple[float, int]  # (sum of log-probabilities, continuation tokens)


def encode_pair(tokenizer, context: str, continuation: str) -> Tuple[List[int], List[int]]:
    """(context tokens, continuation tokens), the harness's way (trailing spaces move right)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context)
    return context_ids, whole[len(context_ids):]


@torch.no_grad()
def score_options(model, tokenizer, context: str, options: Sequence[str],
                  delimiter: str = " ") -> List[OptionScore]:
    """Per option, the log-probability of ``delimiter + option`` after ``context``."""
    pairs = [encode_pair(tokenizer, context, delimiter + o) for o in options]
    context_ids = pairs[0][0]
    conts = [c for _, c in pairs]
    if any(not c for c in conts):
        raise ValueError(f"an option encodes to no tokens after context {context[-40:]!r}")
    out = model(torch.tensor([context_ids]), use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)  # predicts each option's 1st token
    scores = [float(first[c[0]]) for c in conts]
    width = max(len(c) for c in conts) - 1
    if width > 0:
        cache = out.cache
        cache.batch_repeat_interleave(len(conts))
        # Right padding: causal attention keeps pads from touching the real positions before them.
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([c[:-1] + [pad] * (width - len(c) + 1) for c in conts])
        logp = torch.log_softmax(model(ids, cache=cache).logits.float(), dim=-1)
        for i, c in enumerate(conts):
            for t in range(1, len(c)):
                scores[i] += float(logp[i, t - 1, c[t]])
    return [(s, len(c)) for s, c in zip(scores, conts)]


@torch.no_grad()
def score_options_full(model, tokenizer, context: str, options: Sequence[str],
                       delimiter: str = " ") -> List[OptionScore]:
    """Reference: each option as its own full sequence (what the harness computes)."""
    scores = []
    for o in options:
        ctx, cont = encode_pair(tokenizer, context, delimiter + o)
        ids = torch.tensor([ctx + cont])
        logp = torch.log_softmax(model(ids[:, :-1]).logits[0].float(), dim=-1)
        total = sum(float(logp[len(ctx) - 1 + t, tok]) for t, tok in enumerate(cont))
        scores.append((total, len(cont)))
    return scores


def choose(scores: Sequence[OptionScore], options: Sequence[str]) -> Tuple[int, int]:
    """(argmax of log-likelihood, argmax of log-likelihood per character) as the harness's
    ``acc`` and ``acc_norm``."""
    raw = max(range(len(scores)), key=lambda i: scores[i][0])
    norm = max(range(len(scores)), key=lambda i: scores[i][0] / max(1, len(options[i])))
    return raw, norm
