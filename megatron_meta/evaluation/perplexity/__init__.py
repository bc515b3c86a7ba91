"""Perplexity: per-region scoring of held-out documents (:mod:`.evaluate`), the report
(:mod:`.report`, :mod:`.matrix`) and the studies (:mod:`.counterfactual`, :mod:`.context_length`,
their CLI :mod:`.studies_cli`)."""
