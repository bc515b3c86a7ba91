"""Corpus readers: each yields :class:`~megatron_meta.corpora.records.Document` records."""
