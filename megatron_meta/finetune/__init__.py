"""LoRA instruction tuning on Hugging Face models (peft + transformers), and merging adapters."""
