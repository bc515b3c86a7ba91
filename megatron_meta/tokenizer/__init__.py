"""Tokenizers: megatron-core's tokenizer library by Megatron-LM name; SentencePiece training."""

from megatron_meta.tokenizer.load import TOKENIZER_TYPES, decode, load_tokenizer

__all__ = ["TOKENIZER_TYPES", "decode", "load_tokenizer"]
