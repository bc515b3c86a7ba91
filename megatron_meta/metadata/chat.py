"""The authors' chat prompts (FACTS 1a), shared by LoRA fine-tuning and the MCQ benchmark.

Both of their scripts send a system message, the Alpaca preamble, and a user turn; a model whose
tokenizer has no chat template (their own pretrained models) gets the Llama-3 chat template with
its "Cutting Knowledge Date / Today Date" header. Their template file is not in their repository;
:data:`LLAMA3_CHAT_TEMPLATE` writes Llama-3.2-Instruct's format with that template's fixed
fallback date, so a prompt is the same on every day it is built (contents trimmed, as there).
"""

from __future__ import annotations

from typing import Dict, List, Optional

ALPACA_SYSTEM = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)

LLAMA3_CHAT_TEMPLATE = (
    "{{- '<|begin_of_text|>' -}}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set messages = messages[1:] -%}"
    "{%- else -%}{%- set system = '' -%}{%- endif -%}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' -}}"
    "{{- 'Cutting Knowledge Date: December 2023\\nToday Date: 26 Jul 2024\\n\\n' -}}"
    "{{- (system | trim) + '<|eot_id|>' -}}"
    "{%- for message in messages -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + (message['content'] | trim) + '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
)
"""Llama-3.2-Instruct's chat format (system header with the knowledge and today dates)."""


def paper_messages(user: str, response: Optional[str] = None) -> List[Dict[str, str]]:
    """System (the Alpaca preamble), user and, for training, the assistant's response."""
    messages = [{"role": "system", "content": ALPACA_SYSTEM}, {"role": "user", "content": user}]
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return messages


def render_chat(tokenizer, messages: List[Dict[str, str]], add_generation_prompt: bool) -> str:
    """``messages`` through the tokenizer's chat template, or Llama-3's when it has none."""
    template = None if getattr(tokenizer, "chat_template", None) else LLAMA3_CHAT_TEMPLATE
    return tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
    )
