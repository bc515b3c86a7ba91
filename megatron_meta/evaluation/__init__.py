"""Evaluation: the scoring core (:mod:`.scoring`, shared with training validation), per-region
perplexity (:mod:`.perplexity`) and its report (:mod:`.report`).

Nothing is imported here so that ``megatron-meta evaluate --help`` does not load torch.
"""
