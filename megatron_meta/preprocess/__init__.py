"""Metadata-injecting preprocessing into megatron-core ``.bin/.idx`` shards."""
