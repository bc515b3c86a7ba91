"""Evaluation, one subpackage per kind, each with its CLI:

* :mod:`.perplexity`: per-region perplexity of a checkpoint (:mod:`.perplexity.evaluate`), its
  report and region matrix, the perplexity studies (counterfactual metadata, context length);
* :mod:`.mcq`: the localized MCQ benchmark (data and prompts, log-likelihood and generation
  scoring, the answer parser, the report);
* :mod:`.harness`: the benchmark as an lm-evaluation-harness task, run and compared with ours;
* :mod:`.generate`: ``megatron-meta generate``; :mod:`.cli`: ``megatron-meta evaluate``.

Nothing is imported here so that ``megatron-meta evaluate --help`` does not load torch.
"""
