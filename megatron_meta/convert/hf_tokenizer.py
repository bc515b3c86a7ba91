"""The tokenizer of a run as a Hugging Face tokenizer folder (for ``convert to-hf``), and a
Hugging Face tokenizer copied into a converted checkpoint (for ``convert from-hf``).

A SentencePiece model (ours: identity normalization, no dummy prefix, ``"\\n"`` a user-defined
piece, byte fallback) becomes a ``tokenizers`` BPE or Unigram model with the same pieces, merges
(BPE merges ordered by piece score, as SentencePiece applies them) and special tokens, so its ids
equal SentencePiece's; :func:`export_tokenizer` checks this on sample texts before writing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

from megatron_meta.errors import CheckpointError

logger = logging.getLogger(__name__)

# Texts the converted SentencePiece tokenizer must encode exactly as SentencePiece does.
CHECK_TEXTS = (
    "URL: https://www.bbc.co.uk/news/uk-38539472\nCOUNTRY: gb\nCONTINENT: Europe\n\n"
    "TITLE: Storm hits  the coast\n\nCONTENT: Winds of 120 km/h, "
    "\u00e9t\u00e9 \u2014 na\u00efve caf\u00e9s\u2026",
    "  leading spaces, trailing spaces  \n\n\nand tabs\there \U0001F600 \u4e2d\u6587",
)


@dataclass
class SpecialIds:
    """Ids written into config.json / generation_config.json."""

    bos_id: Optional[int]
    eos_id: Optional[int]


def export_tokenizer(entry: Optional[Dict[str, Any]], folder: str) -> SpecialIds:
    """Write the run's tokenizer (a checkpoint's ``tokenizer`` entry) into ``folder``."""
    if not entry or entry.get("type") in (None, "NullTokenizer"):
        logger.warning("the checkpoint records no tokenizer: the HF folder gets none")
        return SpecialIds(None, (entry or {}).get("eod_id"))
    kind, model = entry["type"], entry.get("model") or ""
    if not os.path.exists(model):
        raise CheckpointError(
            f"the run's tokenizer {model!r} ({kind}, from its manifest) is missing; restore it at "
            "that path (or convert on the machine that has the data folder)"
        )
    if kind == "HuggingFaceTokenizer":
        from transformers import AutoTokenizer

        from megatron_meta.tokenizer.load import _huggingface_dir

        tokenizer = AutoTokenizer.from_pretrained(_huggingface_dir(os.path.abspath(model)))
        tokenizer.save_pretrained(folder)
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else entry.get("eod_id")
        return SpecialIds(tokenizer.bos_token_id, eos)
    if kind in ("SentencePieceTokenizer", "GPTSentencePieceTokenizer", "Llama2Tokenizer"):
        tokenizer = sentencepiece_to_hf(model)
        tokenizer.save_pretrained(folder)
        return SpecialIds(tokenizer.bos_token_id, entry.get("eod_id", tokenizer.eos_token_id))
    logger.warning("%s tokenizers are not converted: the HF folder gets no tokenizer", kind)
    return SpecialIds(None, entry.get("eod_id"))


def sentencepiece_to_hf(model_file: str):
    """A ``PreTrainedTokenizerFast`` with the same ids as the SentencePiece model."""
    import sentencepiece as spm
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import generate_merges, import_protobuf

    proto = import_protobuf().ModelProto()
    with open(model_file, "rb") as f:
        proto.ParseFromString(f.read())
    norm, trainer = proto.normalizer_spec, proto.trainer_spec
    if norm.add_dummy_prefix or norm.remove_extra_whitespaces or norm.precompiled_charsmap:
        raise CheckpointError(
            f"{model_file}: SentencePiece normalization (dummy prefix, whitespace folding or a "
            "normalization rule) is not converted; models of `megatron-meta train-tokenizer` are"
        )
    pieces = [(p.piece, p.score) for p in proto.pieces]
    unk = trainer.unk_id
    if trainer.model_type == 2:  # BPE
        vocab = {piece: i for i, (piece, _) in enumerate(pieces)}
        # SentencePiece merges the pair whose result scores highest: order merges by that score.
        merges = generate_merges(vocab, {piece: score for piece, score in pieces})
        core = models.BPE(
            vocab, merges, unk_token=pieces[unk][0], byte_fallback=True, fuse_unk=True
        )
    elif trainer.model_type == 1:  # unigram
        core = models.Unigram(pieces, unk_id=unk, byte_fallback=True)
    else:
        raise CheckpointError(
            f"{model_file}: SentencePiece model type {trainer.model_type} is not converted"
        )
    tok = Tokenizer(core)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    # Control pieces (<s>, </s>) are special; user-defined pieces ("\n") are matched before
    # pre-tokenization, as SentencePiece does.
    tok.add_tokens(
        [AddedToken(p.piece, normalized=False, special=p.type == 3)
         for p in proto.pieces if p.type in (3, 4)]
    )
    names = {i: p.piece for i, p in enumerate(proto.pieces)}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=names.get(unk),
        bos_token=names.get(trainer.bos_id) if trainer.bos_id >= 0 else None,
        eos_token=names.get(trainer.eos_id) if trainer.eos_id >= 0 else None,
        clean_up_tokenization_spaces=False,
    )
    sp = spm.SentencePieceProcessor(model_file=model_file)
    for text in CHECK_TEXTS:
        ours, theirs = sp.encode(text), fast.encode(text, add_special_tokens=False)
        if ours != theirs:
            raise CheckpointError(
                f"{model_file}: the converted tokenizer differs from SentencePiece on a check "
                f"text ({ours[:12]} vs {theirs[:12]}); please report it"
            )
    return fast
