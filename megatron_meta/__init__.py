"""megatron-meta: metadata-conditioned language models on megatron-core.

Reproduces "Metadata Conditioned Large Language Models for Localization" (arXiv 2601.15236):
preprocessing that injects URL / COUNTRY / CONTINENT metadata into Megatron shards, Llama-3
style pretraining on megatron-core, ablations, conversion, LoRA tuning and evaluation.
"""

__version__ = "0.1.0"
