"""``evaluate mcq``: score models on the localized multiple-choice benchmark.

Two scorings, each with and without metadata:

- ``loglik``: the log-likelihood of each option after the question (deterministic); ``chosen`` is
  the most likely option and ``chosen_norm`` the most likely per character (the harness's
  ``acc``/``acc_norm``). With metadata, repeat ``r`` prefixes the made-up URL number ``r``.
- ``generate``: the authors' protocol: their prompt (through the chat template when the tokenizer
  has one), sampling at temperature 0.6 and top-p 0.9, up to 128 new tokens, the answer parsed by
  letter or option text, repeated over 10 made-up base URLs with a seed per repeat.

Under ``--protocol paper`` generation follows the authors' code exactly (FACTS 1a): their system
message (the Alpaca preamble) before the user turn, the Llama-3 chat template for a tokenizer that
has none, pad = EOS, the tokenizer's own special tokens added to the rendered prompt (as their
``tokenizer(prompts)`` does, a second BOS after a Llama-3 template's), batch 4, and the sampler
seeded once with the seed for every run (so their no-metadata repeats are copies). Each record
also carries the authors' parse of the answer (``chosen_paper``) beside ours. One difference is
kept: prompts are padded on the left, where the authors' tokenizer padded on the right, which
makes a batched answer depend on its neighbours' lengths.

Every (model, scoring, setting, repeat, question) becomes one record, so that any table can be
rebuilt from the results file; generation records keep the exact prompt text sent (after the
chat template).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import time
from typing import Dict, Iterator, List, Optional, Sequence

import torch

from megatron_meta.evaluation.mcq.answer_parser import parse_answer, parse_answer_paper
from megatron_meta.evaluation.mcq.loglik import choose, score_options
from megatron_meta.evaluation.mcq.data import Question, generation_prompt, loglik_context
from megatron_meta.metadata.chat import paper_messages, render_chat
from megatron_meta.metadata.synthetic import MADE_UP_BASE_URLS
from megatron_meta.protocol import OURS, PAPER

logger = logging.getLogger(__name__)

RESULTS_FORMAT = "megatron-meta-mcq-v1"
SETTINGS = ("with", "without")


@dataclasses.dataclass
class McqConfig:
    """What ``evaluate mcq`` scores and how."""

    models: List[str]
    """Hugging Face folders or megatron-meta checkpoints (``--model``)."""
    benchmark: str
    """Benchmark JSONL (``--benchmark``)."""
    scoring: str = "loglik"
    """``loglik`` or ``generate`` (``--scoring``)."""
    settings: List[str] = dataclasses.field(default_factory=lambda: list(SETTINGS))
    """``with`` and/or ``without`` metadata (``--metadata``)."""
    repeats: Optional[int] = None
    """Base URLs (and sampling seeds) per setting (``--repeats``); default 10 for generate, 1 for loglik."""
    max_new_tokens: int = 128
    """Generation length limit (``--max-new-tokens``)."""
    temperature: float = 0.6
    """Sampling temperature; 0 means greedy (``--temperature``)."""
    top_p: float = 0.9
    """Nucleus sampling mass (``--top-p``)."""
    batch_size: Optional[int] = None
    """Prompts generated together (``--batch-size``); default 16, the authors' 4 under ``paper``."""
    limit: Optional[int] = None
    """Score only the first N questions (``--limit``), for a quick look."""
    seed: int = 42
    """Sampling and bootstrap seed (``--seed``)."""
    chat_template: str = "auto"
    """Generation prompts through the chat template: ``auto`` (when the tokenizer has one), ``on``, ``off``."""
    shuffle_options: bool = False
    """Show the options in a seeded random order per question and repeat (``--shuffle-options``);
    the same order with and without metadata. The released file puts the right answer first in
    780 of its 800 questions, so a model that prefers "A" looks good in the original order."""

    protocol: str = OURS
    """``paper``: the authors' generation protocol (module docstring; ``--protocol``)."""
    model_settings: Optional[List[List[str]]] = None
    """Per model, its settings (the paper's grid: the baseline with and without metadata, a
    metadata model with, a no-metadata model without); None: ``settings`` for every model."""

    def batch(self) -> int:
        return self.batch_size or (4 if self.protocol == PAPER else 16)

    def repeat_count(self) -> int:
        return self.repeats or (10 if self.scoring == "generate" else 1)


def _label(path: str) -> str:
    """The folder's name, or its parent's when the folder is a generic ``hf`` export."""
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
    return parts[-2] if parts[-1] == "hf" and len(parts) > 1 else parts[-1]


def _base_url(setting: str, repeat: int) -> Optional[str]:
    return MADE_UP_BASE_URLS[repeat % len(MADE_UP_BASE_URLS)] if setting == "with" else None


def loglik_records(model, tokenizer, questions: Sequence[Question], label: str,
                   setting: str, repeat: int) -> Iterator[Dict]:
    base_url = _base_url(setting, repeat)
    for q in questions:
        scores = score_options(model, tokenizer, loglik_context(q, base_url), q.options)
        raw, norm = choose(scores, q.options)
        yield dict(model=label, scoring="loglik", setting=setting, repeat=repeat, base_url=base_url,
                   question=q.index, country=q.country, continent=q.continent, answer=q.answer,
                   chosen=raw, correct=raw == q.answer, chosen_norm=norm,
                   correct_norm=norm == q.answer, option_logliks=[s for s, _ in scores])


def _chat(tokenizer, prompt: str, mode: str, protocol: str = OURS) -> str:
    if protocol == PAPER:
        return render_chat(tokenizer, paper_messages(prompt), add_generation_prompt=True)
    if mode == "on" or (mode == "auto" and getattr(tokenizer, "chat_template", None)):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return prompt


@torch.no_grad()
def generate_texts(model, tokenizer, prompts: Sequence[str], config: McqConfig, seed: int) -> List[str]:
    """Sampled answers, batched with left padding; each row stops at EOS."""
    tokenizer.padding_side = "left"  # generation continues every row from its last real token
    paper = config.protocol == PAPER
    if tokenizer.pad_token_id is None or paper:
        tokenizer.pad_token = tokenizer.eos_token
    pad = tokenizer.pad_token_id
    out: List[str] = []
    if paper:
        torch.manual_seed(seed)  # once a run, as the authors' script seeds at start
    for first in range(0, len(prompts), config.batch()):
        batch = list(prompts[first:first + config.batch()])
        # A chat template already starts with its special tokens (the authors add them again).
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=paper)
        if not paper:
            torch.manual_seed(seed * 100003 + first)
        sample = config.temperature > 0
        gen = model.generate(
            **enc, max_new_tokens=config.max_new_tokens, do_sample=sample, pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
            **(dict(temperature=config.temperature, top_p=config.top_p) if sample else
               dict(temperature=None, top_p=None, top_k=None)),
        )
        out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def generate_records(model, tokenizer, questions: Sequence[Question], label: str, setting: str,
                     repeat: int, config: McqConfig) -> Iterator[Dict]:
    base_url = _base_url(setting, repeat)
    prompts = [_chat(tokenizer, generation_prompt(q, base_url), config.chat_template, config.protocol)
               for q in questions]
    seed = config.seed if config.protocol == PAPER else config.seed + repeat
    texts = generate_texts(model, tokenizer, prompts, config, seed)
    for q, prompt, text in zip(questions, prompts, texts):
        chosen = parse_answer(text, q.options)
        chosen_paper = parse_answer_paper(text, q.options)
        yield dict(model=label, scoring="generate", setting=setting, repeat=repeat,
                   base_url=base_url, question=q.index, country=q.country, continent=q.continent,
                   answer=q.answer, chosen=chosen, correct=chosen == q.answer,
                   parsed=chosen is not None, chosen_paper=chosen_paper,
                   correct_paper=chosen_paper == q.answer, prompt=prompt, response=text)


def score_model(path: str, questions: Sequence[Question], config: McqConfig,
                label: Optional[str] = None, settings: Optional[Sequence[str]] = None) -> List[Dict]:
    from megatron_meta.finetune.hf_load import load_causal_lm

    model, tokenizer, _ = load_causal_lm(path)
    label = label or _label(path)
    records: List[Dict] = []
    for setting in settings or config.settings:
        for repeat in range(config.repeat_count()):
            start = time.perf_counter()
            shown = questions
            if config.shuffle_options:
                shown = [q.shuffled(random.Random(f"{config.seed}:{repeat}:{q.index}")) for q in questions]
            if config.scoring == "loglik":
                batch = list(loglik_records(model, tokenizer, shown, label, setting, repeat))
            else:
                batch = list(generate_records(model, tokenizer, shown, label, setting, repeat, config))
            for r, q in zip(batch, shown if config.shuffle_options else ()):
                r["options"] = list(q.options)  # the order shown: chosen/answer index into it
            records += batch
            logger.info("%s | %s | metadata %s | repeat %d: acc %.3f on %d questions (%.0f s)",
                        label, config.scoring, setting, repeat,
                        sum(r["correct"] for r in batch) / max(1, len(batch)), len(batch),
                        time.perf_counter() - start)
    return records


def write_records(path: str, records: List[Dict], config: McqConfig) -> None:
    """Results JSON, written under a temporary name and renamed."""
    from megatron_meta.outputs import write_json

    write_json(path, {"format": RESULTS_FORMAT, "config": dataclasses.asdict(config),
                      "records": records})


def read_records(path: str) -> List[Dict]:
    from megatron_meta.errors import DataError

    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read MCQ results ({e})") from e
    if not isinstance(raw, dict) or raw.get("format") != RESULTS_FORMAT:
        raise DataError(f"{path}: not an `evaluate mcq` results file (format {RESULTS_FORMAT})")
    return raw["records"]
