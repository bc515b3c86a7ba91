"""Small corpora and real tokenizers built on the fly for the tokenizer/preprocessing tests.

Everything is generated here (no network, no ../shared): a synthetic multi-region news-like corpus
with titles, untitled records, newlines, double spaces, tabs and non-ASCII text; a SentencePiece
BPE model trained on it with :func:`train_sentencepiece`; Hugging Face ``tokenizer.json`` files
(Llama-3-style regex + byte-level BPE, and GPT-2-style) trained with ``tokenizers``; and a
tiktoken vocabulary in megatron-core's JSON format derived from the byte-level BPE.
"""

from __future__ import annotations

import json
import os
import random
from typing import Dict, List

from megatron_meta.corpora.records import Document

WORDS = (
    "the government said on monday that new rules for farmers would take effect next year "
    "officials in lagos and nairobi met with traders while prices of maize rose sharply "
    "analysts expect growth of 3.5 percent despite weaker exports and a stronger dollar "
    "the minister told reporters in london that talks would continue until an agreement "
    "residents of the city described flooding after heavy rain caused damage to roads "
    "café naïve résumé — “quoted” words; 東京 and Zürich appear too"
).split()

PLACES = [
    ("ng", "Africa", "https://www.punchng.com/news/"),
    ("ke", "Africa", "https://nation.africa/kenya/"),
    ("gb", "Europe", "https://www.bbc.co.uk/news/"),
    ("ie", "Europe", "https://www.rte.ie/news/"),
    ("us", "America", "https://edition.cnn.com/2017/"),
    ("ca", "America", "https://www.cbc.ca/news/"),
    ("in", "Asia", "https://timesofindia.indiatimes.com/"),
    ("sg", "Asia", "https://www.straitstimes.com/"),
]


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(5, 14))]
    words[0] = words[0].capitalize()
    return " ".join(words) + rng.choice([".", ".", "!", "?", "."])


def make_documents(n: int = 48, seed: int = 0) -> List[Document]:
    """Deterministic documents spread over 8 countries / 4 continents."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        cc, continent, base = PLACES[i % len(PLACES)]
        paragraphs = []
        for _ in range(rng.randint(1, 3)):
            paragraphs.append(" ".join(_sentence(rng) for _ in range(rng.randint(1, 4))))
        text = "\n\n".join(paragraphs)
        if i % 5 == 0:
            text = text.replace(" ", "  ", 1) + "\n\tTabbed line."
        if i % 7 == 0:
            text = " " + text  # a body starting with a space
        title = "" if i % 6 == 3 else _sentence(rng).rstrip(".!?")
        url = f"{base}article-{i}/" if i % 4 == 0 else f"{base}story?id={1000 + i}"
        docs.append(
            Document(
                id=f"doc-{i}",
                url=url,
                country=cc,
                continent=continent,
                title=title,
                text=text,
                date="2017-02-07",
            )
        )
    return docs


def write_jsonl(path: str, docs: List[Document], extra_lines: List[str] = ()) -> str:
    """Write documents as JSONL records (the keys the default --json-keys etc. expect)."""
    with open(path, "w", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps(doc.to_json(), ensure_ascii=False) + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return path


def training_texts(docs: List[Document]) -> List[str]:
    from megatron_meta.metadata.formatting import VARIANTS, format_document

    names = list(VARIANTS)
    return [format_document(d, names[i % len(names)]) for i, d in enumerate(docs)]


def train_hf_tokenizer(path: str, texts: List[str], style: str = "llama3", vocab: int = 400) -> str:
    """A byte-level BPE ``tokenizer.json`` (``llama3``: regex Split + ByteLevel; ``gpt2``;
    ``gpt2_digits``: Digits then GPT-2's ByteLevel regex)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    from megatron_meta.tokenizer.proofs import NEWLINE_SAFE_PATTERNS

    tok = Tokenizer(models.BPE())
    if style == "llama3":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(NEWLINE_SAFE_PATTERNS[0]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    elif style == "gpt2_digits":  # StarCoder / SmolLM-style: digits split before GPT-2's regex
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
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
    tok.save(path)
    return path


def train_foreign_sentencepiece(prefix: str, texts: List[str], vocab: int = 600) -> str:
    """A Llama-2 / Mistral-style SentencePiece BPE: dummy prefix, byte fallback, identity
    normalizer, and ``"\n"`` in no piece (it becomes ``<0x0A>``), unlike ``train-tokenizer``."""
    import sentencepiece as spm

    lines = [line for t in texts for line in t.split("\n") if line]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=prefix,
        vocab_size=vocab,
        model_type="bpe",
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        byte_fallback=True,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    return prefix + ".model"


def build_tokenizers(folder: str, docs: List[Document]) -> Dict[str, str]:
    """All test tokenizers in ``folder``: name -> model path."""
    from megatron_meta.tokenizer.tiktoken_file import tiktoken_vocab_from_bytelevel_bpe
    from megatron_meta.tokenizer.train import train_sentencepiece

    os.makedirs(folder, exist_ok=True)
    texts = training_texts(docs)
    paths = {
        "sp_bpe": train_sentencepiece(texts, os.path.join(folder, "sp_bpe"), 600, num_threads=1),
        "sp_unigram": train_sentencepiece(
            texts, os.path.join(folder, "sp_uni"), 600, model_type="unigram", num_threads=1
        ),
        "hf_llama3": train_hf_tokenizer(os.path.join(folder, "llama3.json"), texts, "llama3"),
        # GPT-2's pattern makes a trailing "\n\n" one pre-token; texts where "\n\n" precedes a
        # space teach it the merge, as real GPT-2 has it, so prefix + body encodes differently.
        "hf_gpt2": train_hf_tokenizer(
            os.path.join(folder, "gpt2.json"),
            texts + [t.replace("\n\n", "\n\n ") for t in texts],
            "gpt2",
        ),
        "hf_gpt2_digits": train_hf_tokenizer(
            os.path.join(folder, "gpt2_digits.json"), texts, "gpt2_digits"
        ),
        "sp_llama2": train_foreign_sentencepiece(os.path.join(folder, "sp_llama2"), texts),
    }
    paths["tiktoken"] = tiktoken_vocab_from_bytelevel_bpe(
        os.path.join(folder, "tiktoken.json"), paths["hf_llama3"]
    )
    return paths


TOKENIZER_TYPES = {
    "sp_bpe": "SentencePieceTokenizer",
    "sp_unigram": "SentencePieceTokenizer",
    "hf_llama3": "HuggingFaceTokenizer",
    "hf_gpt2": "HuggingFaceTokenizer",
    "hf_gpt2_digits": "HuggingFaceTokenizer",
    "sp_llama2": "SentencePieceTokenizer",
    "tiktoken": "TikTokenizer",
}


class FailingEncoder:
    """Stands in for a LibraryEncoder and fails inside a worker process (crash tests)."""

    kind = "failing"

    def __call__(self, texts):
        raise ValueError("worker died")

    def decode(self, ids):
        return ""
