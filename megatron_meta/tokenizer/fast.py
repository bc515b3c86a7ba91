"""Tokenizers on their own library alone (no megatron-core, no torch), for preprocessing.

``import megatron.core.tokenizers`` imports all of megatron.core: torch, ``torch._dynamo``, the
inductor and wandb, about 9 CPU-s, serial, before preprocessing can start (and ``transformers``'
``AutoTokenizer`` imports torch too). :func:`load_fast_tokenizer` builds the same tokenizer as
:func:`~megatron_meta.tokenizer.load.load_tokenizer` on ``sentencepiece``, ``tiktoken`` or
``tokenizers`` only, reproducing what megatron-core's wrapper does with the options we load it
with: the same ids from ``tokenize``, the same EOD/BOS/EOS/PAD ids, vocabulary size and chat
template. Its ``_tokenizer`` has the attributes of megatron-core's library classes that
:mod:`~megatron_meta.tokenizer.batch` and :mod:`~megatron_meta.tokenizer.proofs` read, so
everything downstream treats both alike. ``tests/test_tokenizer_fast.py`` checks it against
megatron-core for every test tokenizer and the real SmolLM2.

A case whose wrapper semantics are not reproduced here (a Hugging Face folder with a
model-specific tokenizer class, special tokens that ``transformers`` would add to the vocabulary,
tiktoken options) returns None with the reason; the caller then loads through megatron-core.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

# megatron-core's tiktoken wrapper: its named special tokens (ids 0..6), filler names, patterns.
TIKTOKEN_SPECIAL = ["<unk>", "<s>", "</s>", "<mask>", "<pad>", "<cls>", "<sep>"]
TIKTOKEN_FILLER = "<SPECIAL_{id}>"
TIKTOKEN_PATTERN_V2 = "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"  # noqa: E501
# Hugging Face folders whose class is the plain fast tokenizer (transformers 4: the first,
# transformers 5: the second); model-specific classes may change the backend when loaded.
PLAIN_HF_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")


class LibraryTokenizer:
    """The subset of megatron-core's ``MegatronTokenizer`` that preprocessing uses."""

    def __init__(self, library: str, inner: Any, vocab_size: int, eod: Optional[int],
                 bos: Optional[int], eos: Optional[int], pad: Optional[int],
                 chat_template: Optional[str]) -> None:  # fmt: skip
        self.library = library
        self._tokenizer = inner
        self.vocab_size = vocab_size
        self.eod, self.bos, self.eos, self.pad = eod, bos, eos, pad
        self.chat_template = chat_template

    def tokenize(self, text: str) -> List[int]:
        return self._tokenizer.text_to_ids(text)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._tokenizer.ids_to_text([int(i) for i in ids])


class _SentencePiece:
    """megatron-core's ``SentencePieceTokenizer`` with ``legacy=False`` and its default
    ``ignore_extra_whitespaces=True``: ``tokenize`` is the processor's ``encode_as_ids``."""

    legacy = False
    ignore_extra_whitespaces = True

    def __init__(self, path: str) -> None:
        import sentencepiece

        self.tokenizer = sentencepiece.SentencePieceProcessor()
        self.tokenizer.Load(path)
        # Read by the batch encoder and the proofs, as on megatron-core's class.
        pieces = self.tokenizer.encode_as_pieces
        self.removed_extra_spaces = pieces("x  y") == pieces("x y")

    def text_to_ids(self, text: str) -> List[int]:
        return self.tokenizer.encode_as_ids(text)

    def ids_to_text(self, ids: List[int]) -> str:
        return self.tokenizer.decode_ids(ids)


class _TikToken:
    """megatron-core's ``TikTokenTokenizer`` (pattern ``v2``, 1,000 special ids first)."""

    def __init__(self, path: str, vocab_size: int, num_special: int) -> None:
        import tiktoken

        self.num_special_tokens = num_special
        self.special_tokens = TIKTOKEN_SPECIAL + [
            TIKTOKEN_FILLER.format(id=i) for i in range(len(TIKTOKEN_SPECIAL), num_special)
        ]
        with open(path, encoding="utf-8") as f:
            vocab = json.load(f)[: vocab_size - num_special]
        ranks: Dict[bytes, int] = {}
        for i, entry in enumerate(vocab):
            merge = base64.b64decode(entry["token_bytes"])
            # megatron-core asserts these; a file breaking them is loaded (and refused) there.
            if entry.get("rank") != i or (i < 256 and merge != bytes([i])) or merge in ranks:
                raise _Unsupported(f"tiktoken rank {i} is not in megatron-core's format")
            ranks[merge] = i + num_special
        if len(ranks) + num_special != vocab_size:
            raise _Unsupported("tiktoken vocabulary size does not match the file")
        self.tokenizer = tiktoken.Encoding(
            name=Path(path).parent.name,
            pat_str=TIKTOKEN_PATTERN_V2,
            mergeable_ranks=ranks,
            special_tokens={t: i for i, t in enumerate(self.special_tokens)},
        )

    def text_to_ids(self, text: str) -> List[int]:
        return self.tokenizer.encode(text, allowed_special="all")

    def ids_to_text(self, ids: List[int]) -> str:
        # megatron-core joins the tokens' strings one by one; decode() in load.py is exact.
        out = []
        for i in ids:
            if i < self.num_special_tokens:
                out.append(self.special_tokens[i])
            else:
                out.append(self.tokenizer.decode_single_token_bytes(i).decode("utf-8", "replace"))
        return "".join(out)


class _Backend:
    """Stands where megatron-core keeps the ``transformers`` tokenizer (``.backend_tokenizer``)."""

    def __init__(self, backend: Any) -> None:
        self.backend_tokenizer = backend


class _HuggingFace:
    """megatron-core's ``HuggingFaceTokenizer`` over a plain fast tokenizer, on ``tokenizers``:
    ``tokenize`` + ``convert_tokens_to_ids`` of a fast tokenizer are the backend's ids without
    special tokens added."""

    include_special_tokens = False

    def __init__(self, backend: Any) -> None:
        self.tokenizer = _Backend(backend)
        self._backend = backend

    def text_to_ids(self, text: str) -> List[int]:
        return self._backend.encode(text, add_special_tokens=False).ids

    def ids_to_text(self, ids: List[int]) -> str:
        return self._backend.decode(ids, skip_special_tokens=True)


class _Unsupported(Exception):
    """This loader does not reproduce megatron-core's semantics here (the message says why)."""


def load_fast_tokenizer(
    tokenizer_type: str, tokenizer_model: str
) -> Tuple[Optional[LibraryTokenizer], str]:
    """(tokenizer, '') on the library alone, or (None, why) where megatron-core must load it.

    Arguments are checked by the caller (:func:`~megatron_meta.tokenizer.load.check_arguments`).
    """
    from megatron_meta.tokenizer.load import TOKENIZER_TYPES

    library = TOKENIZER_TYPES[tokenizer_type]
    path = os.path.abspath(tokenizer_model)
    try:
        if library == "sentencepiece":
            return _sentencepiece(path), ""
        if library == "tiktoken":
            return _tiktoken(path), ""
        return _huggingface(path), ""
    except _Unsupported as e:
        return None, str(e)
    except ImportError as e:  # the library itself is missing: megatron-core reports it
        return None, str(e)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
        # A file this loader cannot read: megatron-core's loader gives the user its own error.
        return None, f"{type(e).__name__}: {e}"


def _sentencepiece(path: str) -> LibraryTokenizer:
    inner = _SentencePiece(path)
    sp = inner.tokenizer
    eos = sp.eos_id()
    # megatron-core's eod falls back to eos_id; missing ids are -1 as SentencePiece gives them.
    return LibraryTokenizer(
        "sentencepiece", inner, sp.get_piece_size(), eos, sp.bos_id(), eos, sp.pad_id(), None
    )


def _tiktoken(path: str) -> LibraryTokenizer:
    from megatron_meta.tokenizer.load import TIKTOKEN_NUM_SPECIAL, _tiktoken_vocab_size

    vocab_size = _tiktoken_vocab_size(path)
    inner = _TikToken(path, vocab_size, TIKTOKEN_NUM_SPECIAL)
    ids = {t: i for i, t in enumerate(TIKTOKEN_SPECIAL)}
    return LibraryTokenizer(
        "tiktoken", inner, vocab_size, ids["</s>"], ids["<s>"], ids["</s>"], ids["<pad>"], None
    )


def _token_name(value: Any) -> Optional[str]:
    """A special token as ``tokenizer_config.json`` stores it (a string or an AddedToken dict)."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _huggingface(path: str) -> LibraryTokenizer:
    from tokenizers import Tokenizer

    from megatron_meta.tokenizer.load import _guess_eos

    chat_template = None
    if os.path.isdir(path):
        tokenizer_json = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(tokenizer_json):
            raise _Unsupported("the folder has no tokenizer.json (not a fast tokenizer)")
        config = _read_json(os.path.join(path, "tokenizer_config.json"))
        # transformers: tokenizer_config.json first, special_tokens_map.json fills in.
        for key, value in _read_json(os.path.join(path, "special_tokens_map.json")).items():
            if not config.get(key):
                config[key] = value
        chat_template = config.get("chat_template")
        template_file = os.path.join(path, "chat_template.jinja")
        if chat_template is None and os.path.isfile(template_file):
            with open(template_file, encoding="utf-8") as f:
                chat_template = f.read()
    else:
        if not path.endswith(".json"):
            raise _Unsupported("not a tokenizer.json")
        # What load.py's shim folder holds for a bare tokenizer.json.
        tokenizer_json = path
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": _guess_eos(path)}
    if config.get("tokenizer_class") not in PLAIN_HF_CLASSES:
        raise _Unsupported(f"tokenizer_class {config.get('tokenizer_class')!r} is model-specific")
    if isinstance(chat_template, list):  # several named templates: left to transformers
        raise _Unsupported("named chat templates")
    backend = Tokenizer.from_file(tokenizer_json)
    names = {
        k: _token_name(config.get(f"{k}_token")) or None for k in ("eos", "bos", "pad", "sep", "cls")
    }
    # megatron-core's wrapper: eos from sep (and bos from cls) where the tokenizer lacks it.
    names["eos"] = names["eos"] or names["sep"]
    names["bos"] = names["bos"] or names["cls"]
    extra = config.get("additional_special_tokens") or config.get("extra_special_tokens") or []
    added = [_token_name(t) for t in (config.get("added_tokens_decoder") or {}).values()]
    wanted = [n for n in list(names.values()) + [_token_name(t) for t in extra] + added if n]
    missing = [n for n in wanted if backend.token_to_id(n) is None]
    if missing:
        raise _Unsupported(f"transformers would add {missing[:3]} to the vocabulary")
    ids = {k: (backend.token_to_id(v) if v else None) for k, v in names.items()}
    return LibraryTokenizer(
        "huggingface",
        _HuggingFace(backend),
        backend.get_vocab_size(with_added_tokens=True),
        ids["eos"],
        ids["bos"],
        ids["eos"],
        ids["pad"],
        chat_template,
    )


def _read_json(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        value = json.load(f)
    if not isinstance(value, dict):
        raise ValueError(f"{path}: not a JSON object")
    return value

