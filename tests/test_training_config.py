"""Training configuration (YAML recipe + Megatron-LM flags), the learning-rate schedule, the
throughput window and the example recipes."""

from __future__ import annotations

import math
import os

import pytest
from training_support import REPO

from megatron_meta.errors import ConfigError
from megatron_meta.training import metrics
from megatron_meta.training.config import (
    OptimizerConfig,
    RunConfig,
    dump_yaml,
    load_yaml,
    parse_args,
)
from megatron_meta.training.optimizer import learning_rate
from megatron_meta.training.preflight import validate
from megatron_meta.training.shards import parse_region_weights

BASE = ["--data-manifest", "m.json"]


def test_flags_override_yaml_which_overrides_defaults(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {preset: tiny, seq_length: 128}\n"
        "optimizer: {lr: 3e-3, min_lr: 3.0e-4}\n"  # PyYAML reads 3e-3 as a string: accepted
        "data: {exclude_regions: [Asia], region_weights: {Africa: 2, Europe: 1}}\n"
    )
    config = parse_args(
        [
            "--config",
            str(recipe),
            "--lr",
            "1e-3",
            "--tp",
            "2",
            "--mask-metadata-loss",
            "--exclude-regions",
            "Asia,Europe",
            *BASE,
        ]
    )
    assert config.model.seq_length == 128  # YAML
    assert config.optimizer.lr == 1e-3 and config.optimizer.min_lr == 3e-4  # flag, YAML
    assert config.optimizer.weight_decay == 0.01  # default
    assert config.parallel.tensor_model_parallel_size == 2
    assert config.data.mask_metadata_loss is True
    assert config.data.exclude_regions == ["Asia", "Europe"]
    assert config.data.region_weights == "Africa=2,Europe=1"
    assert parse_args(["--no-bf16", *BASE]).model.bf16 is False
    assert parse_args(BASE).model.bf16 is None


def test_resolved_config_round_trips_through_yaml(tmp_path):
    config = parse_args(
        [
            "--model",
            "tiny",
            "--save",
            str(tmp_path),
            "--exclude-regions",
            "Asia",
            "--lr",
            "2e-3",
            *BASE,
        ]
    )
    dump_yaml(config, str(tmp_path / "config.yaml"))
    assert load_yaml(str(tmp_path / "config.yaml")) == config


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lr", "fast"], "--lr: 'fast' is not a valid float"),
        (["--train-iters", "2.5"], "--train-iters: '2.5' is not a valid int"),
        (
            ["--global-batch-size", "10", "--micro-batch-size", "4"],
            "--global-batch-size 10 is not a multiple of --micro-batch-size 4",
        ),
        (["--min-lr", "1", "--lr", "0.1"], "--min-lr 1.0 must be between 0 and --lr 0.1"),
        (["--lr-warmup-iters", "50", "--train-iters", "10"], "--lr-warmup-iters 50"),
        (["--metadata-cooldown-fraction", "1.5"], "--metadata-cooldown-fraction 1.5"),
        (["--metadata-cooldown-fraction", "0.1", "--variant", "none"], "'none' variant"),
        (["--variant", "everything"], "--variant 'everything' is not a variant"),
        (["--model", "gpt5"], "--model 'gpt5' is not a known preset"),
        (["--region-weights", "Africa=-1"], "--region-weights"),
        (
            ["--region-weights", "Asia=1", "--exclude-regions", "Asia"],
            "--exclude-regions leaves out",
        ),
        (["--seq-length", "0"], "--seq-length 0 must be at least 1"),
    ],
)
def test_invalid_values_name_the_flag(argv, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        validate(parse_args([*BASE, *argv]))


def test_missing_manifest_and_bad_recipes(tmp_path):
    with pytest.raises(ConfigError, match="--data-manifest is required"):
        validate(parse_args([]))
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  warmup: 10\n")
    with pytest.raises(ConfigError, match="unknown key training.warmup; training has"):
        parse_args(["--config", str(bad)])
    bad.write_text("trainer: {}\n")
    with pytest.raises(ConfigError, match="unknown section 'trainer'"):
        parse_args(["--config", str(bad)])
    with pytest.raises(ConfigError, match="file not found"):
        parse_args(["--config", str(tmp_path / "none.yaml")])


def test_region_weight_specs():
    assert parse_region_weights(None) is None
    assert parse_region_weights("Balanced") == "balanced"
    assert parse_region_weights("Africa=2, Asia=0.5") == {"Africa": 2.0, "Asia": 0.5}


def test_warmup_then_cosine_to_min_lr():
    o = OptimizerConfig(lr=3e-3, min_lr=3e-4, lr_warmup_iters=500)
    lr = [learning_rate(i, o, 10_000) for i in range(1, 10_001)]
    assert lr[0] == pytest.approx(3e-3 / 500)  # step 1 is not wasted at lr 0
    assert lr[249] == pytest.approx(1.5e-3) and lr[499] == pytest.approx(3e-3)
    assert all(a < b for a, b in zip(lr[:499], lr[1:500]))  # rises through the warmup
    assert all(a >= b for a, b in zip(lr[499:], lr[500:]))  # never rises after it
    middle = 500 + (10_000 - 500) // 2
    assert learning_rate(middle, o, 10_000) == pytest.approx((3e-3 + 3e-4) / 2)
    assert lr[-1] == pytest.approx(3e-4) and learning_rate(12_000, o, 10_000) == 3e-4
    quarter = learning_rate(500 + 9_500 // 4, o, 10_000)
    assert quarter == pytest.approx(3e-4 + 2.7e-3 * 0.5 * (1 + math.cos(math.pi / 4)))
    linear = OptimizerConfig(lr=1.0, min_lr=0.0, lr_decay_style="linear", lr_decay_iters=10)
    assert [learning_rate(i, linear, 100) for i in (0, 5, 10, 20)] == [1.0, 0.5, 0.0, 0.0]
    constant = OptimizerConfig(lr=1.0, lr_warmup_iters=2, lr_decay_style="constant")
    assert [learning_rate(i, constant, 10) for i in (1, 2, 9)] == [0.5, 1.0, 1.0]


def test_throughput_leaves_out_the_first_iteration(monkeypatch):
    clock = iter([0.0, 10.0, 11.0, 12.0, 13.0])  # a slow warm-up iteration, then 1 s each
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(clock))
    tp = metrics.Throughput(
        tokens_per_iteration=1000, flops_per_iteration=4e12, world_size=2, peak_flops=1e12
    )
    tp.start()
    for _ in range(4):
        tp.iteration_done()
    window = tp.window()
    assert window["tokens_per_s"] == pytest.approx(1000)
    assert window["tokens_per_s_per_gpu"] == pytest.approx(500)
    assert window["tflops_per_gpu"] == pytest.approx(2.0)
    assert window["mfu"] == pytest.approx(2.0)
    no_peak = metrics.Throughput(1000, 4e12, 1, None)
    assert no_peak.window()["mfu"] is None
    line = metrics.format_line(
        {
            "iteration": 3,
            "loss": 2.0,
            "lr": 1e-3,
            "grad_norm": 0.5,
            "tokens_per_s": 1e4,
            "tokens_per_s_per_gpu": 5e3,
            "tflops_per_gpu": 0.1,
            "mfu": None,
        },
        10,
    )
    assert "tokens/s 10,000 (5,000 per GPU)" in line and "MFU n/a" in line


@pytest.mark.parametrize("name", ["paper_1b", "paper_0.5b", "meco_1b", "tiny_cpu"])
def test_example_recipes_are_valid(name):
    config = parse_args(["--config", os.path.join(REPO, "examples", f"{name}.yaml"), *BASE])
    validate(config)
    if name.startswith("paper") or name.startswith("meco"):
        t, o = config.training, config.optimizer
        assert (t.global_batch_size, config.model.seq_length, t.train_iters) == (2048, 2048, 10_000)
        assert (o.lr, o.min_lr, o.lr_warmup_iters, o.weight_decay, o.clip_grad) == (
            3e-3,
            3e-4,
            500,
            0.033,
            0.1,
        )
        assert (t.micro_batch_size, config.parallel.tensor_model_parallel_size) == (8, 1)
    if name == "meco_1b":
        assert config.data.mask_metadata_loss and config.data.metadata_cooldown_fraction == 0.1


def test_runconfig_defaults_are_valid_with_a_manifest():
    config = RunConfig()
    config.data.manifest = "m.json"
    validate(config)
