"""Tiny Hugging Face causal LMs for tests: real Llama architecture, the real SmolLM2 tokenizer."""

import os
import shutil

import torch


def tokenizer_files(smollm2_dir, folder):
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if os.path.exists(os.path.join(smollm2_dir, name)):
            shutil.copy(os.path.join(smollm2_dir, name), folder)


def make_tiny_llama(folder, smollm2_dir, seed=0, tie=True):
    """A random 2-layer Llama (hidden 32) saved with SmolLM2's tokenizer; returns the folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=tie,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2,
                         initializer_range=0.5)  # logits large enough for LoRA to move them
    model = LlamaForCausalLM(config)
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer_files(smollm2_dir, folder)
    return str(folder)


def make_unigram_llama(folder, smollm2_dir, logits):
    """A Llama whose next-token distribution ignores the context: softmax(``logits``).

    Attention and MLP outputs are zero, every embedding is the same vector, so the last hidden
    state is one constant vector c after the final norm; the output layer maps c to ``logits``
    exactly (its first column holds them and c = (1, 0, ..., 0) after the norm). Log-likelihoods
    under it are therefore known in closed form.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(logits), hidden_size=8, intermediate_size=16,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=512, tie_word_embeddings=False,
                         rms_norm_eps=0.0, pad_token_id=2)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.model.embed_tokens.weight[:, 0] = 1.0  # rms-normalized: (sqrt(8), 0, ...)
        model.model.norm.weight.fill_(1.0)
        for layer in model.model.layers:
            layer.input_layernorm.weight.fill_(1.0)
            layer.post_attention_layernorm.weight.fill_(1.0)
        model.lm_head.weight[:, 0] = torch.as_tensor(logits, dtype=torch.float32) / 8 ** 0.5
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer_files(smollm2_dir, folder)
    return str(folder)
