"""Metadata: country/continent tables and the exact training-text format."""
