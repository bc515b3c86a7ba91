"""Load a tokenizer through megatron-core's tokenizer library, by its Megatron-LM name.

Preprocessing, training and evaluation all call :func:`load_tokenizer`, so the ids written into
the shards are exactly the ids a model sees at inference. megatron-core normally reads a
``tokenizer_metadata.json`` next to the model; we hand it the metadata as a dict instead, so a
read-only or shared model folder is never written to.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from typing import Any, Dict, List, Sequence

from megatron_meta.errors import ConfigError

logger = logging.getLogger(__name__)

# Megatron-LM --tokenizer-type -> megatron-core tokenizer library.
TOKENIZER_TYPES: Dict[str, str] = {
    "SentencePieceTokenizer": "sentencepiece",
    "GPTSentencePieceTokenizer": "sentencepiece",
    "Llama2Tokenizer": "sentencepiece",
    "HuggingFaceTokenizer": "huggingface",
    "TikTokenizer": "tiktoken",
}

# megatron-core's TikTokenTokenizer reserves this many ids for special tokens before the BPE ranks.
TIKTOKEN_NUM_SPECIAL = 1000
TIKTOKEN_DEFAULT_MAX_VOCAB = 2**17


def load_tokenizer(tokenizer_type: str, tokenizer_model: str, **options: Any):
    """A megatron-core tokenizer (``.tokenize``, ``.detokenize``, ``.vocab_size``, ``.eod``).

    Args:
        tokenizer_type: Megatron-LM name: ``SentencePieceTokenizer`` (also
            ``GPTSentencePieceTokenizer``, ``Llama2Tokenizer``), ``HuggingFaceTokenizer`` (a local
            directory or a ``tokenizer.json``; needs ``transformers``) or ``TikTokenizer`` (a
            megatron-core tiktoken vocabulary ``.json``).
        tokenizer_model: Path of the model file or directory.
        options: Extra keyword arguments for the megatron-core library class (e.g. ``pattern``
            for tiktoken).

    Raises:
        ConfigError: unknown type, missing file, or a missing optional dependency.
    """
    library = check_arguments(tokenizer_type, tokenizer_model)
    path = os.path.abspath(tokenizer_model)
    kwargs: Dict[str, Any] = {}
    if library == "sentencepiece":
        kwargs["legacy"] = False
    elif library == "huggingface":
        path = _huggingface_dir(path)
        kwargs["use_fast"] = True
    elif library == "tiktoken":
        kwargs["vocab_size"] = _tiktoken_vocab_size(path)
        kwargs["num_special_tokens"] = TIKTOKEN_NUM_SPECIAL
    kwargs.update(options)

    with warnings.catch_warnings():
        # megatron.core's package import warns about optional GPU libraries; irrelevant here.
        warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed")
        from megatron.core.tokenizers import MegatronTokenizer

    metadata = {"library": library, "model_type": "gpt"}
    try:
        return MegatronTokenizer.from_pretrained(
            tokenizer_path=path, metadata_path=metadata, **kwargs
        )
    except (ValueError, OSError, RuntimeError, AssertionError) as e:
        raise ConfigError(
            f"--tokenizer-model {tokenizer_model}: cannot load as {tokenizer_type} ({e})"
        ) from e


def check_arguments(tokenizer_type: str, tokenizer_model: str) -> str:
    """The library name of ``tokenizer_type``; ConfigError for a bad type or a missing model."""
    library = TOKENIZER_TYPES.get(tokenizer_type)
    if library is None:
        raise ConfigError(
            f"--tokenizer-type {tokenizer_type!r} is not supported; "
            f"choose from {', '.join(TOKENIZER_TYPES)}"
        )
    if not tokenizer_model:
        raise ConfigError(f"--tokenizer-model is required with --tokenizer-type {tokenizer_type}")
    if not os.path.exists(tokenizer_model):
        raise ConfigError(f"--tokenizer-model {tokenizer_model}: no such file or directory")
    return library


def load_tokenizer_fast(tokenizer_type: str, tokenizer_model: str):
    """For preprocessing: the tokenizer on its own library (no megatron-core, no torch; same ids,
    :mod:`~megatron_meta.tokenizer.fast`), else through megatron-core, saying why."""
    from megatron_meta.tokenizer.fast import load_fast_tokenizer

    check_arguments(tokenizer_type, tokenizer_model)
    tokenizer, why = load_fast_tokenizer(tokenizer_type, tokenizer_model)
    if tokenizer is not None:
        return tokenizer
    logger.info("loading %s through megatron-core (%s)", tokenizer_model, why)
    return load_tokenizer(tokenizer_type, tokenizer_model)


def special_tokens(tokenizer) -> Dict[str, Any]:
    """BOS/EOS/PAD ids (None where the tokenizer has none) and whether it has a chat template."""
    out: Dict[str, Any] = {}
    for name in ("bos", "eos", "pad"):
        try:
            value = getattr(tokenizer, name)
        except (AttributeError, NotImplementedError, ValueError):
            value = None
        # SentencePiece reports a missing special token as -1.
        out[f"{name}_id"] = int(value) if value is not None and int(value) >= 0 else None
    try:
        out["has_chat_template"] = bool(getattr(tokenizer, "chat_template", None))
    except (AttributeError, NotImplementedError):
        out["has_chat_template"] = False
    return out


def _huggingface_dir(path: str) -> str:
    """Directory for ``AutoTokenizer``; a bare ``tokenizer.json`` gets a private shim folder."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--tokenizer-type HuggingFaceTokenizer needs the `transformers` package: "
            "pip install transformers (or pip install -e '.[hf]')"
        ) from None
    if os.path.isdir(path):
        return path
    if not path.endswith(".json"):
        raise ConfigError(
            f"--tokenizer-model {path}: give a Hugging Face tokenizer directory or a tokenizer.json"
        )
    # AutoTokenizer needs a folder with a config. Build one in a user cache (not next to the
    # user's file, which may be read-only) that links the tokenizer.json and names the fast class.
    import hashlib

    stat = os.stat(path)
    key = hashlib.sha1(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = os.environ.get("MEGATRON_META_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "megatron-meta"
    )
    shim = os.path.join(cache, "hf-tokenizers", key)
    if not os.path.isfile(os.path.join(shim, "tokenizer_config.json")):
        os.makedirs(shim, exist_ok=True)
        link = os.path.join(shim, "tokenizer.json")
        if not os.path.lexists(link):
            os.symlink(path, link)
        config = {"tokenizer_class": "PreTrainedTokenizerFast"}
        # Keep the eos token of the tokenizer.json so `.eod` works (Llama-3 style files).
        eos = _guess_eos(path)
        if eos:
            config["eos_token"] = eos
        tmp = os.path.join(shim, f"tokenizer_config.json.tmp{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(config, f)
        os.replace(tmp, os.path.join(shim, "tokenizer_config.json"))
    return shim


def _guess_eos(tokenizer_json: str) -> str:
    """An end-of-text special token of a bare tokenizer.json, '' when none is recognizable."""
    with open(tokenizer_json, encoding="utf-8") as f:
        added = json.load(f).get("added_tokens", [])
    names = [t["content"] for t in added if t.get("special")]
    for candidate in ("<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>", "<|eot_id|>"):
        if candidate in names:
            return candidate
    return ""


def _tiktoken_vocab_size(path: str) -> int:
    """megatron-core asserts the vocab size matches the file: derive it instead of guessing."""
    try:
        with open(path, encoding="utf-8") as f:
            ranks = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"--tokenizer-model {path}: not a tiktoken vocabulary JSON ({e})") from e
    if not isinstance(ranks, list):
        raise ConfigError(
            f"--tokenizer-model {path}: expected megatron-core's tiktoken format "
            "(a JSON list of {rank, token_bytes, token_str})"
        )
    return min(len(ranks) + TIKTOKEN_NUM_SPECIAL, TIKTOKEN_DEFAULT_MAX_VOCAB)


def quiet_megatron_logs() -> None:
    """For our command lines: megatron-core logs every index load at INFO and warns on import
    about optional GPU libraries; keep only its real warnings."""
    logging.getLogger("megatron.core").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed")


def tokenizer_library(tokenizer) -> str:
    """The megatron-core library name behind a loaded tokenizer."""
    return getattr(tokenizer, "library", "")


def decode(tokenizer, ids: Sequence[int]) -> str:
    """Exact text of ``ids``.

    megatron-core's tiktoken wrapper decodes token by token (a character split over two tokens
    becomes U+FFFD); decode the bytes as a whole there. Other libraries use ``detokenize``.
    """
    ids = [int(i) for i in ids]
    if tokenizer_library(tokenizer) == "tiktoken":
        inner = tokenizer._tokenizer
        special = [i for i in ids if i < inner.num_special_tokens]
        if not special:
            return inner.tokenizer.decode(ids)
        parts: List[str] = []
        run: List[int] = []
        for i in ids:
            if i < inner.num_special_tokens:
                if run:
                    parts.append(inner.tokenizer.decode(run))
                    run = []
                parts.append(inner.special_tokens[i])
            else:
                run.append(i)
        if run:
            parts.append(inner.tokenizer.decode(run))
        return "".join(parts)
    return tokenizer.detokenize(ids)
