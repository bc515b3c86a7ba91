"""`megatron-meta convert` and `train --finetune` refuse bad input with one line and exit 2,
leaving nothing half-written; a SentencePiece tokenizer converts to an HF one with equal ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from megatron_meta.cli import main as cli_main
from megatron_meta.metadata.formatting import format_document
from training_support import REPO


def run(capsys, *argv):
    code = cli_main(["convert", *argv])
    return code, capsys.readouterr().err


def test_a_missing_or_foreign_checkpoint(tmp_path, capsys):
    out = str(tmp_path / "o")
    code, err = run(capsys, "to-hf", "--load", str(tmp_path / "nope"), "--output", out)
    assert code == 2 and "no checkpoint there" in err and "Traceback" not in err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "metadata.json").write_text("{}")
    code, err = run(capsys, "to-hf", "--load", str(foreign), "--output", str(tmp_path / "o"))
    assert code == 2 and "cannot read the checkpoint" in err
    assert sorted(os.listdir(tmp_path)) == ["foreign"]  # no output, no temporary folder


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "gpt2"}, "model_type='gpt2' is not supported"),
        ({"attention_bias": True}, "attention_bias=True is not supported"),
        ({"sliding_window": 4096}, "sliding_window=4096 is not supported"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}, "rope_type='yarn'"),
    ],
)
def test_an_unsupported_architecture_names_the_field(tmp_path, capsys, change, message):
    config = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
              "num_key_value_heads": 2, "num_hidden_layers": 1, "intermediate_size": 128,
              "vocab_size": 300}
    config.update(change)
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps(config))
    code, err = run(capsys, "from-hf", "--hf", str(hf), "--save", str(tmp_path / "ck"))
    assert code == 2 and message in err, err
    assert not os.path.exists(tmp_path / "ck")


def test_a_tp_size_that_does_not_divide_the_heads(smollm2_hf, tmp_path):
    # A real subprocess: the exit code and the single line are what a user sees.
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, "-m", "megatron_meta.cli", "convert", "from-hf", "--hf", smollm2_hf,
         "--save", str(tmp_path / "ck"), "--tensor-model-parallel-size", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--tensor-model-parallel-size 2 does not divide num_attention_heads=9" in result.stderr
    assert os.listdir(tmp_path) == []


def weights_only_tiny_checkpoint(save: str, vocab: int) -> None:
    """A weights-only checkpoint of the tiny preset, as `convert from-hf` writes one."""
    from megatron_meta.checkpoints import FORMAT_VERSION, model_identity
    from megatron_meta.checkpoints.write import save_state
    from megatron_meta.models import build_model, get_preset
    from megatron_meta.parallel import destroy_parallel, initialize_parallel
    from megatron_meta.training.config import RunConfig

    initialize_parallel(1, seed=0)
    try:
        model = build_model(get_preset("tiny"), vocab_size=vocab, seq_length=32, tp_size=1)
        tokenizer = {"type": "NullTokenizer", "model": "", "vocab_size": vocab, "eod_id": 1}
        save_state(save, 0, {
            "model": model.sharded_state_dict(), "format_version": FORMAT_VERSION,
            "iteration": 0, "consumed_samples": 0, "config": RunConfig().to_dict(),
            "model_identity": model_identity(get_preset("tiny"), vocab), "tokenizer": tokenizer,
            "layout": {"world_size": 1, "tp": 1, "dp": 1}, "weights_only": True,
        })
    finally:
        destroy_parallel()


def test_finetune_flags_and_refusals(tmp_path):
    from megatron_meta.checkpoints import is_megatron_checkpoint, latest_checkpoint
    from megatron_meta.errors import CheckpointError, ConfigError
    from megatron_meta.training.config import parse_args
    from megatron_meta.training.preflight import preflight
    from training_support import VOCAB, tiny_args, write_corpus

    manifest = write_corpus(str(tmp_path / "corpus"))
    save = str(tmp_path / "tiny")
    weights_only_tiny_checkpoint(save, VOCAB)
    assert is_megatron_checkpoint(save) and is_megatron_checkpoint(latest_checkpoint(save))
    assert not is_megatron_checkpoint(str(tmp_path / "corpus"))
    assert not is_megatron_checkpoint(str(tmp_path / "missing"))

    def check(path, **flags):
        return preflight(parse_args(tiny_args(path, **{"--model": None, **flags})))

    # Leaving --model out takes the shape from the checkpoint.
    assert check(manifest, **{"--load": save, "--finetune": True}).tokenizer.vocab_size == VOCAB
    assert check(manifest, **{"--pretrained-checkpoint": save, "--load": str(tmp_path / "new"),
                              "--save": str(tmp_path / "new")})
    other = json.load(open(manifest))
    other["tokenizer"]["vocab_size"] = VOCAB + 200
    other_path = str(tmp_path / "corpus" / "other.manifest.json")
    json.dump(other, open(other_path, "w"))
    with pytest.raises(CheckpointError, match="tokenizer does not match the shards"):
        check(other_path, **{"--load": save, "--finetune": True})
    with pytest.raises(CheckpointError, match="holds weights only"):
        check(manifest, **{"--load": save})  # resuming needs optimizer state
    with pytest.raises(ConfigError, match="--finetune loads the weights of --load"):
        check(manifest, **{"--finetune": True})
    with pytest.raises(CheckpointError, match="no checkpoint there"):
        check(manifest, **{"--pretrained-checkpoint": str(tmp_path / "missing")})


def test_sentencepiece_becomes_an_hf_tokenizer_with_equal_ids(tmp_path, news_documents):
    import sentencepiece as spm

    from megatron_meta.convert.hf_tokenizer import export_tokenizer
    from megatron_meta.tokenizer.train import train_sentencepiece

    texts = [format_document(d, v) for d in news_documents[:60] for v in ("full", "none")]
    model = train_sentencepiece(texts, str(tmp_path / "sp"), 1000, num_threads=1)
    out = tmp_path / "hf_tok"
    out.mkdir()
    entry = {"type": "SentencePieceTokenizer", "model": model, "vocab_size": 1000, "eod_id": 2}
    special = export_tokenizer(entry, str(out))
    assert (special.bos_id, special.eos_id) == (1, 2)
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(out))
    sp = spm.SentencePieceProcessor(model_file=model)
    for doc in news_documents[60:80]:  # unseen documents, newlines included
        text = format_document(doc, "full")
        assert "\n" in text
        ids = hf(text, add_special_tokens=False)["input_ids"]
        assert ids == sp.encode(text)
        assert hf.decode(ids) == text
