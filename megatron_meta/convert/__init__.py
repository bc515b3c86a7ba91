"""Hugging Face interop: megatron-meta checkpoints to Llama-architecture Hugging Face folders
(:mod:`.to_hf`) and back (:mod:`.from_hf`), through one explicit adapter (:mod:`.hf_llama`)."""
