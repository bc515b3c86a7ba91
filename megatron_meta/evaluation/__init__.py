"""Evaluation: the scoring core (:mod:`.scoring`, shared with training validation), per-region
perplexity (:mod:`.perplexity`) and its report (:mod:`.report`, :mod:`.matrix`), the perplexity
studies (:mod:`.counterfactual`, :mod:`.context_length`), the localized MCQ benchmark
(:mod:`.mcq`, :mod:`.loglik`, :mod:`.answer_parser`, :mod:`.mcq_report`), the
lm-evaluation-harness task (:mod:`.harness_task`) and ``megatron-meta generate`` (:mod:`.generate`).

Nothing is imported here so that ``megatron-meta evaluate --help`` does not load torch.
"""
