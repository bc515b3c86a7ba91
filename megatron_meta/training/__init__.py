"""Pretraining on megatron-core: configuration, data, optimizer, checkpoints, metrics, loop.

``megatron-meta train`` (:mod:`.cli`) parses a :class:`~.config.RunConfig`, checks it
(:mod:`.preflight`) and hands it to :func:`.trainer.train`. Nothing heavy is imported here.
"""

from megatron_meta.training.config import RunConfig, parse_args

__all__ = ["RunConfig", "parse_args"]
