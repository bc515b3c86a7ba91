"""Preprocessing output straight into the training loop (in this process, one rank): real text,
a real SentencePiece tokenizer, shards per continent with held-out validation documents, metadata
loss masking and the metadata cooldown."""

from __future__ import annotations

import math
import os

import pytest
from preprocess_fixtures import make_documents, training_texts, write_jsonl
from training_support import read_metrics

from megatron_meta.manifest import load_manifest
from megatron_meta.training.config import parse_args


@pytest.fixture(scope="module")
def news_manifest(tmp_path_factory):
    from megatron_meta.preprocess.cli import main as preprocess
    from megatron_meta.tokenizer.train import train_sentencepiece

    folder = str(tmp_path_factory.mktemp("news"))
    docs = make_documents(64, seed=1)
    jsonl = write_jsonl(os.path.join(folder, "news.jsonl"), docs)
    model = train_sentencepiece(
        training_texts(docs), os.path.join(folder, "sp"), 600, num_threads=1
    )
    prefix = os.path.join(folder, "data", "news")
    assert (
        preprocess(
            [
                "--input",
                jsonl,
                "--output-prefix",
                prefix,
                "--tokenizer-type",
                "SentencePieceTokenizer",
                "--tokenizer-model",
                model,
                "--metadata-variants",
                "full,none",
                "--split-by",
                "continent",
                "--holdout-valid-fraction",
                "0.25",
                "--append-eod",
                "--workers",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    return prefix + ".manifest.json"


def test_train_with_metadata_masking_cooldown_and_held_out_validation(news_manifest, tmp_path):
    from megatron_meta.training.trainer import train

    save = str(tmp_path / "run")
    config = parse_args(
        [
            "--model",
            "tiny",
            "--data-manifest",
            news_manifest,
            "--variant",
            "full",
            "--seq-length",
            "64",
            "--micro-batch-size",
            "2",
            "--global-batch-size",
            "4",
            "--train-iters",
            "8",
            "--lr",
            "3e-3",
            "--lr-warmup-iters",
            "1",
            "--log-interval",
            "1",
            "--eval-interval",
            "4",
            "--eval-iters",
            "2",
            "--num-workers",
            "0",
            "--mask-metadata-loss",
            "--metadata-cooldown-fraction",
            "0.25",
            "--region-weights",
            "balanced",
            "--save",
            save,
        ]
    )
    summary = train(config)
    assert summary.iteration == 8 and summary.stopped_by is None
    records = read_metrics(save)
    assert [r["variant"] for r in records] == ["full"] * 6 + ["none"] * 2
    assert all(math.isfinite(r["loss"]) for r in records)
    # Validation on every continent's held-out documents, loss counted from TITLE: on.
    regions = {h.region for h in load_manifest(news_manifest).holdout if h.split == "valid"}
    assert set(summary.val_loss) == regions and len(regions) >= 3
    assert [r["iteration"] for r in records if "val_loss" in r] == [4, 8]
    assert all(0 < v < 10 for v in summary.val_loss.values())


@pytest.mark.gpu
def test_gpu_training_with_megatron_optimizer_and_resume(tmp_path):
    """On CUDA: bf16, Transformer Engine when present, megatron-core's optimizer; a resumed run
    continues the uninterrupted one. Run with CUDA_VISIBLE_DEVICES=0 pytest -m gpu."""
    from training_support import losses_by_iteration, run_cli, tiny_args, write_corpus

    manifest = write_corpus(str(tmp_path / "corpus"))
    gpu = {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES") or "0"}
    whole, part = str(tmp_path / "whole"), str(tmp_path / "part")
    for save, extra in ((whole, {}), (part, {"--exit-interval": 3}), (part, {"--load": part})):
        result = run_cli(tiny_args(manifest, **{"--save": save, **extra}), env_extra=gpu)
        assert result.returncode == 0, result.stderr[-3000:]
    assert "megatron-core Adam (bf16" in result.stderr
    reference = losses_by_iteration(whole)
    assert reference[6] < reference[1]
    resumed = losses_by_iteration(part)
    assert all(math.isclose(resumed[i], reference[i], rel_tol=1e-2) for i in range(1, 7))
