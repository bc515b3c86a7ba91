"""Hugging Face interop on the real SmolLM2-135M-Instruct and on a tiny model trained at TP=2:
round trip bit for bit, logits against transformers at TP=1 and TP=2, greedy generation, loss
equality, and continued pretraining whose first loss is transformers' loss on the same batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from megatron_meta.convert.from_hf import import_from_hf
from megatron_meta.convert.to_hf import export_to_hf
from megatron_meta.metadata.formatting import format_document
from training_support import REPO, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_ckpt(smollm2_hf, tmp_path_factory):
    return import_from_hf(smollm2_hf, str(tmp_path_factory.mktemp("conv") / "smollm2"))


@pytest.fixture(scope="module")
def converted_back(smollm2_ckpt, tmp_path_factory):
    return export_to_hf(smollm2_ckpt, str(tmp_path_factory.mktemp("back") / "smollm2-back"))


@pytest.fixture(scope="module")
def hf_tokenizer(smollm2_hf):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_hf)


@pytest.fixture(scope="module")
def hf_model(smollm2_hf):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm2_hf, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def news_ids(news_documents, hf_tokenizer):
    """Three real news documents in the paper's format, 96 tokens each."""
    texts = [format_document(d, "full") for d in news_documents[:3]]
    return torch.tensor([hf_tokenizer(t)["input_ids"][:96] for t in texts])


def test_round_trip_is_bit_identical(smollm2_hf, converted_back, news_documents):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    out = converted_back
    original = load_file(os.path.join(smollm2_hf, "model.safetensors"))
    back = load_file(os.path.join(out, "model.safetensors"))
    assert sorted(original) == sorted(back)
    for name, tensor in original.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor), name
    before = json.load(open(os.path.join(smollm2_hf, "config.json")))
    after = json.load(open(os.path.join(out, "config.json")))
    for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size", "rms_norm_eps", "tie_word_embeddings",
                "rope_parameters", "bos_token_id", "eos_token_id", "max_position_embeddings"):
        assert after[key] == before[key], key
    tok_a, tok_b = AutoTokenizer.from_pretrained(smollm2_hf), AutoTokenizer.from_pretrained(out)
    text = format_document(news_documents[0], "full")
    assert tok_a(text)["input_ids"] == tok_b(text)["input_ids"]
    chat = [{"role": "user", "content": "Where is Accra?"}]
    assert tok_a.apply_chat_template(chat, tokenize=False) == tok_b.apply_chat_template(
        chat, tokenize=False
    )
    assert (tok_b.bos_token, tok_b.eos_token) == (tok_a.bos_token, tok_a.eos_token)
    assert os.listdir(os.path.dirname(out)) == ["smollm2-back"]  # nothing half-written left


def test_logits_match_transformers_at_tp1(smollm2_ckpt, hf_model, news_ids):
    from megatron_meta.checkpoints.load import load_model_for_eval
    from megatron_meta.parallel import destroy_parallel

    try:
        model, info = load_model_for_eval(smollm2_ckpt, tp=1)
        positions = torch.arange(news_ids.shape[1]).expand_as(news_ids)
        with torch.no_grad():
            ours = model(news_ids, positions, None)[..., : info.vocab_size]
    finally:
        destroy_parallel()
    with torch.no_grad():
        theirs = hf_model(news_ids).logits
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() < 1e-4


@pytest.mark.distributed
def test_logits_match_transformers_at_tp3(smollm2_ckpt, hf_model, news_ids, tmp_path):
    # SmolLM2 has 9 query and 3 key/value heads: TP=3 is its smallest tensor-parallel split (TP=2
    # is covered by the tiny model trained at TP=2 below).
    ids_path, out_path = str(tmp_path / "ids.pt"), str(tmp_path / "logits.pt")
    torch.save(news_ids, ids_path)
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "3",
           "--master-port", str(free_port()), os.path.join(REPO, "tests", "convert_tp_worker.py"),
           smollm2_ckpt, ids_path, out_path]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with torch.no_grad():
        theirs = hf_model(news_ids).logits
    ours = torch.load(out_path)
    assert ours.shape == theirs.shape
    # Three partial sums per row-parallel layer (30 layers) round differently from one matmul:
    # measured 1.4e-4 on logits of magnitude ~20 (TP=1: below 1e-4, above).
    assert (ours - theirs).abs().max().item() < 3e-4


def test_greedy_generation_of_the_converted_back_model(converted_back, hf_model, news_ids):
    from transformers import AutoModelForCausalLM

    back = AutoModelForCausalLM.from_pretrained(converted_back)
    prompt = news_ids[:1, :40]
    kwargs = dict(max_new_tokens=20, do_sample=False, pad_token_id=2)
    expected = hf_model.generate(prompt, **kwargs)
    got = back.eval().generate(prompt, **kwargs)
    assert expected.shape[1] == 60 and torch.equal(got, expected)


@pytest.mark.distributed
def test_tiny_model_trained_at_tp2_gives_transformers_the_same_loss(tmp_path):
    from transformers import AutoModelForCausalLM

    from megatron_meta.checkpoints.load import load_model_for_eval
    from megatron_meta.models.scoring import score_sequences
    from megatron_meta.parallel import destroy_parallel
    from training_support import EOD, make_documents, run_cli, tiny_args, write_corpus

    manifest = write_corpus(str(tmp_path / "corpus"))
    save = str(tmp_path / "tiny")
    args = tiny_args(manifest, **{"--tensor-model-parallel-size": 2, "--train-iters": 4,
                                  "--save": save})
    result = run_cli(args, nproc=2)
    assert result.returncode == 0, result.stderr[-3000:]
    out = export_to_hf(save, str(tmp_path / "hf"), max_shard_bytes=400_000)  # sharded + index
    assert os.path.isfile(os.path.join(out, "model.safetensors.index.json"))
    hf = AutoModelForCausalLM.from_pretrained(out).eval()

    held_out = [d["meta"] + d["body"] + [EOD] for r in range(3) for d in make_documents(r, 3, 99)]
    try:
        model, _ = load_model_for_eval(save, tp=1)
        nll, count = score_sequences(model, held_out, [1] * len(held_out))
    finally:
        destroy_parallel()
    theirs = []
    with torch.no_grad():
        for seq in held_out:
            ids = torch.tensor([seq])
            theirs.append(float(hf(ids, labels=ids).loss) * (len(seq) - 1))
    ours, theirs = nll.sum() / count.sum(), sum(theirs) / count.sum()
    assert abs(ours - theirs) / theirs < 1e-5
    generated = hf.generate(torch.tensor([held_out[0][:8]]), max_new_tokens=5, do_sample=False,
                            pad_token_id=EOD)
    assert generated.shape == (1, 13)


def test_continued_pretraining_starts_from_the_converted_model(
    smollm2_ckpt, hf_model, news_documents, tmp_path
):
    import torch.nn.functional as F

    from megatron_meta.cli import main as cli_main
    from megatron_meta.manifest import load_manifest
    from megatron_meta.training.config import parse_args
    from megatron_meta.training.data import TrainBatches, build_phases
    from training_support import losses_by_iteration, run_cli

    jsonl = tmp_path / "news.jsonl"
    jsonl.write_text("".join(json.dumps(d.to_json()) + "\n" for d in news_documents[:24]))
    tokenizer = os.path.join(smollm2_ckpt, "tokenizer")
    prefix = str(tmp_path / "data" / "news")
    assert cli_main([
        "preprocess", "--input", str(jsonl), "--input-format", "jsonl", "--json-keys", "text",
        "--url-key", "url", "--country-key", "country", "--continent-key", "continent",
        "--title-key", "title", "--id-key", "id", "--tokenizer-type", "HuggingFaceTokenizer",
        "--tokenizer-model", tokenizer, "--output-prefix", prefix, "--metadata-variants", "full",
        "--append-eod", "--workers", "1",
    ]) == 0
    manifest_path = prefix + ".manifest.json"
    manifest = load_manifest(manifest_path)
    # The converted tokenizer keeps SmolLM2's special tokens; the manifest records its EOD.
    assert (manifest.tokenizer.vocab_size, manifest.tokenizer.eod_id) == (49152, 2)

    save = str(tmp_path / "continued")
    args = ["--data-manifest", manifest_path, "--variant", "full", "--load", smollm2_ckpt,
            "--finetune", "--seq-length", "64", "--micro-batch-size", "2",
            "--global-batch-size", "2", "--train-iters", "2", "--lr", "1e-5",
            "--log-interval", "1", "--eval-iters", "1", "--num-workers", "0", "--seed", "3",
            "--save", save]
    result = run_cli(args)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = losses_by_iteration(save)
    assert sorted(losses) == [1, 2]  # a new run: iterations counted from 0

    config = parse_args(args)
    batch = TrainBatches(build_phases(config, manifest), config, 1, 0).get(0)
    total, tokens = 0.0, 0.0
    with torch.no_grad():
        for mb in batch:
            logits = hf_model(mb["tokens"], position_ids=mb["position_ids"]).logits
            # Flat [tokens, vocab] as transformers' own loss does: torch's CPU cross_entropy on
            # the [batch, vocab, seq] layout is 1e-4 off over a 49k vocabulary.
            flat = logits.reshape(-1, logits.shape[-1])
            nll = F.cross_entropy(flat, mb["labels"].reshape(-1), reduction="none")
            total += float((nll * mb["loss_mask"].reshape(-1)).sum())
            tokens += float(mb["loss_mask"].sum())
    theirs = total / tokens
    assert abs(losses[1] - theirs) / theirs < 1e-5, (losses[1], theirs)


def test_imported_tokenizer_preprocesses_and_the_manifest_records_its_special_tokens(
    smollm2_ckpt, hf_tokenizer, news_documents, tmp_path
):
    """`from-hf` saves the tokenizer beside the weights; preprocessing with it keeps BOS/EOS/EOD
    and the chat template, and the manifest says which ids the shards were written with."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from megatron_meta.manifest import load_manifest

    corpus = tmp_path / "news.jsonl"
    with open(corpus, "w", encoding="utf-8") as f:
        for d in news_documents[:4]:
            f.write(json.dumps({"text": d.text, "url": d.url, "country": d.country, "title": d.title}) + "\n")
    tokenizer_dir = os.path.join(smollm2_ckpt, "tokenizer")
    prefix = str(tmp_path / "out" / "news")
    run = subprocess.run(
        [sys.executable, "-m", "megatron_meta.cli", "preprocess", "--input", str(corpus),
         "--url-key", "url", "--country-key", "country", "--title-key", "title",
         "--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", tokenizer_dir,
         "--metadata-variants", "full", "--append-eod", "--output-prefix", prefix, "--workers", "0"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    tok = load_manifest(prefix + ".manifest.json").tokenizer
    assert (tok.bos_id, tok.eos_id, tok.eod_id) == (
        hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id, hf_tokenizer.eos_token_id)
    assert tok.pad_id == hf_tokenizer.pad_token_id and tok.has_chat_template
    shard = IndexedDataset(load_manifest(prefix + ".manifest.json").shards[0].prefix)
    expected = hf_tokenizer(format_document(news_documents[0], "full"))["input_ids"]
    assert shard[0].tolist() == expected + [hf_tokenizer.eos_token_id]
