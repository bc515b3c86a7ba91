"""The tokenizer on its own library (preprocessing's loader) against megatron-core's, the
reference: the same ids, special ids and vocabulary, hence the same shards; and a preprocessing
run that imports neither megatron-core nor torch."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from preprocess_fixtures import TOKENIZER_TYPES, write_jsonl

from megatron_meta.metadata.formatting import VARIANTS, format_document
from megatron_meta.preprocess.pipeline import DocumentEncoder, EncoderConfig
from megatron_meta.preprocess.sharing import choose_shared_body
from megatron_meta.preprocess.writer import token_dtype
from megatron_meta.tokenizer.batch import BatchEncoder
from megatron_meta.tokenizer.fast import LibraryTokenizer, load_fast_tokenizer
from megatron_meta.tokenizer.load import load_tokenizer, load_tokenizer_fast, special_tokens
from megatron_meta.tokenizer.proofs import sharing_plan

HOSTILE = [
    "",
    "<s> a </s> <pad> <|endoftext|> <|im_start|>user\nhi<|im_end|> <SPECIAL_12>",
    "  double  spaces\t\ttabs\n\n\n  trailing  ",
    "\u65e5\u672c\u8a9e \u2603 \u262f \u2581 caf\u00e9 \U0001f600 \r\n",
]


def _texts(docs):
    return [format_document(d, v, f) for d in docs for v in VARIANTS for f in ("full", "domain")]


def _assert_same_tokenizer(fast, ref, texts):
    assert isinstance(fast, LibraryTokenizer)
    assert fast.library == ref.library
    assert fast.vocab_size == ref.vocab_size
    assert fast.eod == ref.eod
    assert special_tokens(fast) == special_tokens(ref)
    for text in texts:
        assert fast.tokenize(text) == list(ref.tokenize(text)), text
        ids = ref.tokenize(text)
        assert fast.detokenize(ids) == ref.detokenize(ids)
    assert BatchEncoder(fast).kind == BatchEncoder(ref).kind
    assert sharing_plan(fast) == sharing_plan(ref)


@pytest.mark.parametrize("name", list(TOKENIZER_TYPES))
def test_fast_tokenizer_equals_megatron_core(toks, docs, name):
    fast, why = load_fast_tokenizer(TOKENIZER_TYPES[name], toks[name])
    assert fast is not None, why
    ref = load_tokenizer(TOKENIZER_TYPES[name], toks[name])
    _assert_same_tokenizer(fast, ref, _texts(docs) + HOSTILE)


def test_fast_tokenizer_equals_megatron_core_on_smollm2(smollm2_hf, docs):
    # A real Hugging Face folder: tokenizer_config.json, chat_template.jinja, BOS, PAD.
    fast, why = load_fast_tokenizer("HuggingFaceTokenizer", smollm2_hf)
    assert fast is not None, why
    ref = load_tokenizer("HuggingFaceTokenizer", smollm2_hf)
    assert special_tokens(fast)["has_chat_template"]
    _assert_same_tokenizer(fast, ref, _texts(docs[:8]) + HOSTILE)


@pytest.mark.parametrize("name", list(TOKENIZER_TYPES))
def test_shard_contents_equal_megatron_core_loading(toks, docs, name):
    """What a worker writes for every variant, with either tokenizer: the start-up decisions and
    every array of the shards (tokens, sequence lengths, metadata counts), with EOD and BOS."""
    out = {}
    for kind, load in (("fast", load_tokenizer_fast), ("ref", load_tokenizer)):
        tok = load(TOKENIZER_TYPES[name], toks[name])
        bos = special_tokens(tok)["bos_id"]
        config = EncoderConfig(
            tokenizer_type=TOKENIZER_TYPES[name],
            tokenizer_model=toks[name],
            variants=list(VARIANTS),
            append_eod=True,
            eod_id=int(tok.eod),
            prepend_bos=bos is not None,
            bos_id=bos if bos is not None else -1,
            dtype=token_dtype(tok.vocab_size).name,
        )
        config.shared_body, config.library = choose_shared_body(tok, config, docs[:16])
        encoded = DocumentEncoder(config, tok).encode(docs)
        out[kind] = (config, encoded)
    (fast_config, fast), (ref_config, ref) = out["fast"], out["ref"]
    assert fast_config.shared_body == ref_config.shared_body
    assert fast_config.dtype == ref_config.dtype
    assert fast_config.library.kind == ref_config.library.kind
    for variant in VARIANTS:
        for field in dataclasses.fields(fast[variant]):
            a, b = getattr(fast[variant], field.name), getattr(ref[variant], field.name)
            assert a.dtype == b.dtype and np.array_equal(a, b), (variant, field.name)


def _hf_folder(folder, tokenizer_json: str, config: dict) -> str:
    folder.mkdir()
    (folder / "tokenizer.json").write_bytes(open(tokenizer_json, "rb").read())
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return str(folder)


def test_model_specific_hugging_face_class_is_loaded_by_megatron_core(toks, tmp_path):
    folder = _hf_folder(tmp_path / "gpt2-class", toks["hf_gpt2"],
                        {"tokenizer_class": "GPT2Tokenizer", "eos_token": "<|endoftext|>"})
    fast, why = load_fast_tokenizer("HuggingFaceTokenizer", folder)
    assert fast is None and "model-specific" in why
    tok = load_tokenizer_fast("HuggingFaceTokenizer", folder)
    assert not isinstance(tok, LibraryTokenizer) and tok.library == "huggingface"


def test_unknown_special_token_is_left_to_megatron_core(toks, tmp_path):
    # transformers would add a special token missing from tokenizer.json (and grow the
    # vocabulary); the library loader does not guess that.
    folder = _hf_folder(tmp_path / "added", toks["hf_llama3"],
                        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<new-bos>"})
    fast, why = load_fast_tokenizer("HuggingFaceTokenizer", folder)
    assert fast is None and "<new-bos>" in why


@pytest.mark.parametrize("name", ["sp_bpe", "tiktoken", "hf_llama3"])
def test_preprocess_cli_imports_neither_megatron_core_nor_torch_and_forks(toks, docs, tmp_path, name):
    data = write_jsonl(str(tmp_path / "docs.jsonl"), docs)
    script = (
        "import sys\n"
        "from megatron_meta.cli import main\n"
        "import megatron_meta.preprocess.cli\n"  # numpy imported, as when the run starts
        "from megatron_meta.preprocess.workers import start_method\n"
        "print('START', start_method())\n"
        "rc = main(sys.argv[1:])\n"
        "heavy = [m for m in ('megatron.core', 'torch', 'transformers') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
        "sys.exit(rc)\n"
    )
    args = [
        "preprocess", "--input", data, "--output-prefix", str(tmp_path / "out"),
        "--tokenizer-type", TOKENIZER_TYPES[name], "--tokenizer-model", toks[name],
        "--workers", "2", "--append-eod", "--metadata-variants", "full,none", "--no-progress",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run(
        [sys.executable, "-c", script] + args, capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout, proc.stdout
    # One thread when the pool starts (numpy's BLAS threads kept off): workers are forked.
    assert "START fork" in proc.stdout, proc.stdout
