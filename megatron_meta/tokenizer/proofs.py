"""When a metadata block and its body may be encoded apart, and how: one :class:`SharePlan` a family.

A formatted document is ``NAME: value\\n`` lines, a blank line, then the body (``TITLE: ...`` or
``CONTENT: ...``). Preprocessing cuts it right after newlines into pieces (each metadata line, the
body) and encodes the body once for all variants. :func:`sharing_plan` only answers with a plan
when an argument holds for all texts, not just a sample (the start-up check then also compares
both ways on a sample and crafted boundary cases). The families:

* ``atomic-newline``: SentencePiece BPE with ``"\\n"`` in no piece but, at most, a user-defined
  ``"\\n"`` (our ``train-tokenizer``), identity normalizer, no whitespace collapsing. ``"\\n"`` is
  then a symbol no merge can cross, and BPE merges on either side of it are independent (merge
  order within a side is kept: ties break by position, which a shift does not change). Without a
  dummy prefix any cut after ``"\\n"`` is exact. Unigram models are *not* safe: Viterbi sums float
  scores from the start of the text, and near-ties resolve differently when a prefix is added.
* ``dummy-prefix``: the same SentencePiece models with ``add_dummy_prefix`` and byte fallback
  (Llama-2 / Mistral style; ``"\\n"`` becomes the byte piece ``<0x0A>``). The library puts ``"▁"``
  before every text, which a piece that does not start the document must not get. Such a piece is
  encoded behind a sentinel ``"\\n"`` and the sentinel's ids are stripped: the sentinel is atomic,
  so what follows it is encoded as after any newline. (Byte fallback is required: without it
  SentencePiece joins adjacent unknown characters, ``"\\n"`` included, into one ``<unk>``.)
* ``newline-run``: regex pre-tokenized byte-level BPE (tiktoken, Hugging Face ``Split`` +
  ``ByteLevel(use_regex=False)``) with a pattern of :data:`NEWLINE_SAFE_PATTERNS` (Llama-3 /
  cl100k, o200k, megatron-core's two tiktoken patterns). In those patterns every alternative that
  can match ``"\\n"`` can only continue with more whitespace, and no alternative that matches a
  non-space character can start with ``"\\n"``; so no pre-token spans ``"\\n"`` + non-space, the
  cut is a pre-token boundary in the whole text, and BPE never merges across pre-tokens.
* ``gpt2-regex``: GPT-2's pattern, built into ``ByteLevel(use_regex=True)`` (GPT-2, SmolLM2,
  Pythia/GPT-NeoX) or given to a ``Split``, alone or after ``Digits`` splitters. Its
  ``\\s+(?!\\S)|\\s+`` makes a whitespace run before a letter two pre-tokens (the run less its last
  character, then that character) but one pre-token at the end of a text, so ``"...\\n\\n"`` alone
  differs from ``"...\\n\\nTITLE"``. Cut instead as ``"CONTINENT: Asia\\n"`` + ``"\\n"`` +
  ``"TITLE: ..."``: each ``"\\n"`` preceded by a non-space and followed by a letter or by
  ``"\\n"`` + letter is one pre-token in the whole text and alone, and the regex has no look-behind,
  so matching after a cut starts the same in both. A value that is empty or ends in whitespace
  breaks this (``"URL: \\n"``): such a document is encoded whole (``guard_values``).
  ``Digits`` splitters never cut next to a newline or a letter, so they keep all of this.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional, Tuple

# Pre-tokenizer patterns checked by hand (module docstring): Llama-3 / cl100k, megatron-core's
# TikTokenTokenizer v1 and v2, o200k, and cl100k as tiktoken writes it today. The latter's
# ``\s++$`` makes trailing whitespace one pre-token at the end of a text; a piece ends in "\n", and
# in the whole text ``\s*[\r\n]`` takes the same run when a non-space follows.
NEWLINE_SAFE_PATTERNS = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+",
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"
    r"|\s*[\r\n]|\s+(?!\S)|\s+",
    r"[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*"
    "|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"
    r"|\s++$|\s*[\r\n]|\s+(?!\S)|\s",
)
# GPT-2's pattern, the one ByteLevel(use_regex=True) applies.
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


@dataclasses.dataclass(frozen=True)
class SharePlan:
    """How a formatted document is cut into separately encoded pieces (picklable)."""

    family: str
    """``atomic-newline``, ``dummy-prefix``, ``newline-run`` or ``gpt2-regex``."""
    split_blank_line: bool = False
    """Encode the blank line after the metadata as its own ``"\\n"`` piece (GPT-2's regex)."""
    context: str = ""
    """Sentinel put before a piece that does not start the document; its ids are stripped."""
    guard_values: bool = False
    """A metadata value that is empty or ends in whitespace: encode that document whole."""

    @property
    def any_newline_cut(self) -> bool:
        """Whether every cut after ``"\\n"`` before a non-space character is exact."""
        return not (self.split_blank_line or self.context or self.guard_values)


def sharing_plan(tokenizer) -> Tuple[Optional[SharePlan], str]:
    """(plan, reason): how a metadata block and its body may be encoded apart; None if unproven."""
    library = getattr(tokenizer, "library", "")
    inner = getattr(tokenizer, "_tokenizer", None)
    if inner is None:
        return None, f"unknown tokenizer library {library!r}"
    if library == "sentencepiece":
        return _sentencepiece_plan(inner)
    if library == "tiktoken":
        special_nl = [t for t in inner.special_tokens if "\n" in t]
        if special_nl:
            return None, f"special tokens contain a newline: {special_nl[:3]}"
        if inner.tokenizer._pat_str not in NEWLINE_SAFE_PATTERNS:
            return None, "tiktoken pattern is not one of the newline-safe patterns"
        return (
            SharePlan("newline-run"),
            "tiktoken: regex pre-tokens never span a newline + non-space character",
        )
    if library == "huggingface":
        return _huggingface_plan(inner)
    return None, f"no proof for tokenizer library {library!r}"


def prefix_split_proof(tokenizer) -> Tuple[bool, str]:
    """(safe, reason): is ``encode(a + b) == encode(a) + encode(b)`` whenever ``a`` ends in
    ``"\\n"`` and ``b`` starts with a non-space character (the plain cut, no sentinel)?"""
    plan, reason = sharing_plan(tokenizer)
    if plan is None:
        return False, reason
    if not plan.any_newline_cut:
        return False, f"{plan.family}: only the cuts of its plan are exact"
    return True, reason


def _sentencepiece_plan(inner) -> Tuple[Optional[SharePlan], str]:
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    if inner.legacy or (inner.removed_extra_spaces and not inner.ignore_extra_whitespaces):
        return None, "megatron-core rewrites the text before SentencePiece (legacy/extra spaces)"
    proto = model_pb2.ModelProto()
    proto.ParseFromString(inner.tokenizer.serialized_model_proto())
    norm, trainer = proto.normalizer_spec, proto.trainer_spec
    if trainer.model_type != model_pb2.TrainerSpec.BPE:
        return None, "SentencePiece model is not BPE (unigram Viterbi is not position-independent)"
    if norm.precompiled_charsmap or norm.name not in ("identity", ""):
        return None, f"SentencePiece normalizer {norm.name!r} is not identity"
    if norm.remove_extra_whitespaces:
        return None, "SentencePiece collapses whitespace"
    if trainer.treat_whitespace_as_suffix:
        return None, "SentencePiece treats whitespace as a suffix"
    user_defined = model_pb2.ModelProto.SentencePiece.USER_DEFINED
    newline_pieces = [(p.piece, p.type) for p in proto.pieces if "\n" in p.piece]
    if newline_pieces not in ([], [("\n", user_defined)]):
        return None, "a SentencePiece piece joins '\\n' with other characters"
    if not newline_pieces and not trainer.byte_fallback:
        return None, "'\\n' is not a piece and there is no byte fallback (unknowns merge)"
    if norm.add_dummy_prefix:
        return (
            SharePlan("dummy-prefix", context="\n"),
            "SentencePiece BPE, '\\n' atomic; dummy prefix handled with a '\\n' sentinel",
        )
    return SharePlan("atomic-newline"), "SentencePiece BPE with '\\n' as an atomic piece"


def _huggingface_plan(inner) -> Tuple[Optional[SharePlan], str]:
    backend = getattr(inner.tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None, "not a fast (Rust) Hugging Face tokenizer"
    spec = json.loads(backend.to_str())
    if spec.get("normalizer") is not None:
        return None, "Hugging Face tokenizer has a normalizer"
    if (spec.get("model") or {}).get("type") != "BPE":
        return None, "Hugging Face tokenizer model is not BPE"
    if any("\n" in t.get("content", "") for t in spec.get("added_tokens", [])):
        return None, "an added token contains a newline"
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    # Digits splitters only cut next to digits: never at a cut after "\n" before a letter/"\n".
    steps = [s for s in steps if s.get("type") != "Digits"]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"]:
        level = steps[0]
        if not level.get("use_regex", True):
            return None, "ByteLevel without a regex: nothing splits the text at newlines"
        pattern = GPT2_PATTERN
    elif kinds == ["Split", "ByteLevel"]:
        split, level = steps
        if split.get("invert") or split.get("behavior") != "Isolated":
            return None, "the regex Split does not isolate its matches"
        if level.get("use_regex"):
            return None, "ByteLevel applies GPT-2's regex after a Split"
        pattern = (split.get("pattern") or {}).get("Regex")
    else:
        return None, f"pre-tokenizer {kinds or 'none'} has no proof (expected [Split,] ByteLevel)"
    if level.get("add_prefix_space"):
        return None, "ByteLevel adds a prefix space to every text"
    if pattern in NEWLINE_SAFE_PATTERNS:
        return (
            SharePlan("newline-run"),
            "Hugging Face byte-level BPE with a newline-safe Split pattern",
        )
    if pattern == GPT2_PATTERN:
        return (
            SharePlan("gpt2-regex", split_blank_line=True, guard_values=True),
            "Hugging Face byte-level BPE with GPT-2's regex; blank line encoded on its own",
        )
    return None, "pre-tokenizer regex is not one of the analysed patterns"
