"""Inputs of the preprocessing benchmark: the replicated news corpus and five tokenizer families.

Families (``--families``): ``sentencepiece`` (ours: ``train-tokenizer`` settings), ``gpt2-bpe``
(byte-level BPE, ``ByteLevel(use_regex=True)``, trained here with ``tokenizers``), ``smollm2`` (the
real SmolLM2-135M-Instruct tokenizer, ``megatron-meta fetch smollm2-135m-instruct``),
``llama3-split`` (``Split`` with Llama-3's pattern + ``ByteLevel(use_regex=False)``, trained here)
and ``tiktoken`` (megatron-core's tiktoken JSON made from the ``llama3-split`` vocabulary; its own
pattern is megatron-core's default ``v2``). Trained vocabularies have ``--vocab-size`` pieces.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Tuple

from megatron_meta.corpora.bad_records import BadRecords
from megatron_meta.corpora.records import Document
from megatron_meta.corpora.registry import CorpusSpec, iter_documents
from megatron_meta.metadata.formatting import format_document

FAMILIES = ("sentencepiece", "gpt2-bpe", "smollm2", "llama3-split", "tiktoken")


@dataclasses.dataclass
class Family:
    name: str
    tokenizer_type: str
    """Megatron-LM ``--tokenizer-type``."""
    model: str
    """``--tokenizer-model``."""


def news_documents() -> List[Document]:
    from megatron_meta.corpora.news_articles import fetch_news_articles

    spec = CorpusSpec(inputs=[fetch_news_articles()], format="news-articles")
    return list(iter_documents(spec, BadRecords("skip", log_first=0)))


def replicate(docs: List[Document], path: str, min_bytes: int) -> Tuple[int, int]:
    """Write copies of ``docs`` (ids suffixed) as JSONL until the full-format text reaches
    ``min_bytes``; returns (documents, formatted bytes)."""
    n = size = copy = 0
    with open(path, "w", encoding="utf-8") as f:
        while size < min_bytes:
            for doc in docs:
                record = doc.to_json()
                record["id"] = f"{doc.id}#{copy}"
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                size += len(format_document(doc, "full").encode("utf-8"))
                n += 1
                if size >= min_bytes:
                    break
            copy += 1
    return n, size


def read_jsonl_documents(path: str) -> List[Document]:
    with open(path, encoding="utf-8") as f:
        return [Document.from_json(json.loads(line)) for line in f]


def _train_bytelevel(path: str, texts: List[str], vocab: int, split: bool) -> str:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    from megatron_meta.tokenizer.proofs import NEWLINE_SAFE_PATTERNS

    if os.path.exists(path):
        return path
    tok = Tokenizer(models.BPE())
    if split:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(NEWLINE_SAFE_PATTERNS[0]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    tok.save(path + ".tmp")
    os.replace(path + ".tmp", path)
    return path


def build_families(work: str, docs: List[Document], vocab: int, names: List[str]) -> List[Family]:
    """The tokenizers of ``names`` (trained into ``work`` once, reused afterwards)."""
    from megatron_meta.tokenizer.tiktoken_file import tiktoken_vocab_from_bytelevel_bpe
    from megatron_meta.tokenizer.train import train_sentencepiece

    texts = [format_document(d, "full") for d in docs]
    out: Dict[str, Family] = {}
    for name in names:
        if name == "sentencepiece":
            model = os.path.join(work, f"sp_bpe_{vocab}.model")
            if not os.path.exists(model):
                train_sentencepiece(texts, model[: -len(".model")], vocab)
            out[name] = Family(name, "SentencePieceTokenizer", model)
        elif name == "gpt2-bpe":
            path = _train_bytelevel(os.path.join(work, f"gpt2_{vocab}.json"), texts, vocab, False)
            out[name] = Family(name, "HuggingFaceTokenizer", path)
        elif name == "smollm2":
            from megatron_meta.assets import smollm2_hf_dir

            out[name] = Family(name, "HuggingFaceTokenizer", smollm2_hf_dir())
        elif name in ("llama3-split", "tiktoken"):
            path = _train_bytelevel(os.path.join(work, f"llama3_{vocab}.json"), texts, vocab, True)
            if name == "llama3-split":
                out[name] = Family(name, "HuggingFaceTokenizer", path)
            else:
                tt = os.path.join(work, f"tiktoken_{vocab}.json")
                if not os.path.exists(tt):
                    tiktoken_vocab_from_bytelevel_bpe(tt, path)
                out[name] = Family(name, "TikTokenizer", tt)
        else:
            raise ValueError(f"unknown family {name!r}; choose from {', '.join(FAMILIES)}")
    return [out[n] for n in names]
