"""Alpaca-format instruction data: reading, the seeded split, prompts and response-only labels.

Records are ``{"instruction", "input", "output"}`` (``input`` optional), as a JSON list or JSONL.
The prompt goes through the tokenizer's chat template when it has one (the instruction, then a
blank line and the input, as the user turn); otherwise through the plain template
:data:`PLAIN_TEMPLATE`. Loss counts only the response tokens (and the end-of-turn marker).

With metadata wrapping (the paper's metadata variant) the user text is preceded by a made-up
facts page in the training format: ``URL: {made-up site}/{cc}\\nCOUNTRY: {cc}\\nCONTINENT: {C}\\n\\n
TITLE: Facts about the country {cc}\\n\\nCONTENT:\\n``, drawn with the recipe's seed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from typing import Dict, List, Sequence, Tuple

from megatron_meta.errors import DataError
from megatron_meta.metadata.chat import ALPACA_SYSTEM, render_chat
from megatron_meta.metadata.synthetic import MADE_UP_BASE_URLS, facts_prefix, random_facts_prefix

logger = logging.getLogger(__name__)

PLAIN_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"
"""Prompt of a tokenizer without a chat template (``{instruction}`` includes the input)."""

IGNORE = -100


@dataclasses.dataclass(frozen=True)
class Example:
    instruction: str
    input: str
    output: str
    where: str
    """``file:line`` (or ``file[i]`` in a JSON list), for messages."""


def read_alpaca(path: str, limit: int | None = None) -> List[Example]:
    """Every record of ``path``; a :class:`DataError` counting and naming the bad ones."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"--data {path}: cannot read ({e})") from e
    items: List[Tuple[str, object]] = []
    problems: List[str] = []
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from e
        items = [(f"{path}[{i}]", row) for i, row in enumerate(rows)]
    else:
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    items.append((f"{path}:{lineno}", json.loads(line)))
                except json.JSONDecodeError as e:
                    problems.append(f"{path}:{lineno}: invalid JSON ({e.msg})")
    examples = []
    for where, row in items:
        if not isinstance(row, dict):
            problems.append(f"{where}: not an object")
        elif not str(row.get("instruction") or "").strip():
            problems.append(f"{where}: no 'instruction'")
        elif not isinstance(row.get("output"), str) or not row["output"].strip():
            problems.append(f"{where}: no 'output'")
        else:
            examples.append(Example(str(row["instruction"]), str(row.get("input") or ""),
                                    row["output"], where))
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise DataError(f"{len(problems)} bad instruction record(s): {shown}")
    if len(examples) < 2:
        raise DataError(f"--data {path}: {len(examples)} record(s); need at least 2 to split")
    return examples[:limit] if limit else examples


def split(examples: Sequence[Example], valid_fraction: float, seed: int) -> Tuple[List[Example], List[Example]]:
    """Seeded shuffle, then (train, valid); each side keeps at least one example."""
    order = list(examples)
    random.Random(seed).shuffle(order)
    n_valid = min(len(order) - 1, max(1, round(len(order) * valid_fraction)))
    return order[n_valid:], order[:n_valid]


def user_text(ex: Example) -> str:
    return ex.instruction + (f"\n\n{ex.input}" if ex.input.strip() else "")


def render(tokenizer, ex: Example, prefix: str = "") -> Tuple[str, str]:
    """(prompt, prompt + response) as text; the response ends with the end-of-turn marker."""
    content = prefix + user_text(ex)
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}, {"role": "assistant", "content": ex.output}],
            tokenize=False)
        if full.startswith(prompt):
            return prompt, full
    prompt = PLAIN_TEMPLATE.format(instruction=content)
    return prompt, prompt + ex.output + (tokenizer.eos_token or "")


def encode(tokenizer, ex: Example, seq_length: int, prefix: str = "") -> Dict[str, List[int]]:
    """``input_ids`` and ``labels`` (prompt tokens ignored), cut to ``seq_length``; ``cut``: how
    many tokens the cut removed."""
    prompt, full = render(tokenizer, ex, prefix)
    # Special tokens are in the template's text already; the tokenizer must not add a second BOS.
    chat = bool(getattr(tokenizer, "chat_template", None))
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=not chat)
    full_ids = tokenizer.encode(full, add_special_tokens=not chat)
    ids = full_ids[:seq_length]
    n_prompt = min(len(prompt_ids), len(ids))
    return {"input_ids": ids, "labels": [IGNORE] * n_prompt + ids[n_prompt:],
            "cut": len(full_ids) - len(ids)}


ALPACA_SYSTEM_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request."
)

# The authors' draw, in their order: a continent, then a country of it (no sg), then a URL.
PAPER_CONTINENT_COUNTRIES = {
    "America": ("us", "ca", "jm"),
    "Asia": ("in", "pk", "bd", "lk", "hk", "my", "ph"),
    "Africa": ("ng", "za", "ke", "gh", "tz"),
    "Europe": ("gb", "ie"),
}


def paper_facts_prefix(rng: random.Random) -> str:
    continent = rng.choice(list(PAPER_CONTINENT_COUNTRIES))
    cc = rng.choice(PAPER_CONTINENT_COUNTRIES[continent])
    return facts_prefix(rng.choice(MADE_UP_BASE_URLS), cc, continent)


def paper_messages(ex: Example, prefix: str) -> List[Dict[str, str]]:
    """The authors' three messages: system, user (metadata or ``CONTENT:\n`` first), assistant."""
    user = f"### Instruction:\n{ex.instruction}"
    if ex.input.strip():
        user += f"\n\n### Input:\n{ex.input}"
    return [
        {"role": "system", "content": ALPACA_SYSTEM_WITH_INPUT if ex.input.strip() else ALPACA_SYSTEM},
        {"role": "user", "content": (prefix or "CONTENT:\n") + user},
        {"role": "assistant", "content": ex.output},
    ]


def encode_paper(tokenizer, ex: Example, seq_length: int, prefix: str = "") -> Dict[str, List[int]]:
    """The authors' rendering; every token is a label. ``cut``: tokens past ``seq_length``."""
    text = render_chat(tokenizer, paper_messages(ex, prefix), add_generation_prompt=False)
    ids = tokenizer.encode(text, add_special_tokens=False)
    return {"input_ids": ids[:seq_length], "labels": ids[:seq_length], "cut": max(0, len(ids) - seq_length)}


def encode_all(tokenizer, examples: Sequence[Example], seq_length: int, metadata_wrap: bool,
               seed: int, paper: bool = False) -> List[Dict[str, List[int]]]:
    """Encoded examples; those whose response is cut away entirely are dropped."""
    rng = random.Random(seed)
    out = []
    cut = 0
    for ex in examples:
        if paper:
            item = encode_paper(tokenizer, ex, seq_length, paper_facts_prefix(rng) if metadata_wrap else "")
        else:
            item = encode(tokenizer, ex, seq_length, random_facts_prefix(rng) if metadata_wrap else "")
        cut += item.pop("cut") > 0
        if any(label != IGNORE for label in item["labels"]):
            out.append(item)
    if cut:
        logger.warning(
            "%d of %d example(s) cut at --seq-length %d (the authors cut none)",
            cut, len(examples), seq_length)
    return out


def pad_collate(pad_id: int):
    """Collator: right-pads ``input_ids`` with ``pad_id`` and ``labels`` with the ignore index."""
    import torch

    def collate(batch: List[Dict[str, List[int]]]) -> Dict[str, "torch.Tensor"]:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    return collate
