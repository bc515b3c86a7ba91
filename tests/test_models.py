"""Model presets, their TransformerConfig, the layer-spec choice, vocab padding and the build."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from megatron_meta.errors import ConfigError
from megatron_meta.models import PRESETS, build_model, get_preset, pad_vocab_size, select_backend
from megatron_meta.models import build as build_module
from megatron_meta.models.flops import forward_flops_per_token
from megatron_meta.models.presets import transformer_config, with_overrides
from megatron_meta.parallel import validate_layout
from megatron_meta.platform import cpu

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_registry_has_the_issue_presets_with_sources():
    assert {"paper-0.5b", "paper-1b", "llama3.2-1b", "smollm2-135m", "tiny"} <= set(PRESETS)
    for p in PRESETS.values():
        assert p.source and p.hidden_size % p.num_attention_heads == 0, p.name
        assert p.num_attention_heads % p.num_query_groups == 0, p.name


def test_paper_and_reference_shapes():
    one_b, half_b = get_preset("paper-1b"), get_preset("paper-0.5b")
    assert (one_b.num_layers, one_b.hidden_size, one_b.num_attention_heads,
            one_b.num_query_groups, one_b.ffn_hidden_size) == (16, 2048, 16, 16, 5632)
    assert (half_b.num_layers, half_b.hidden_size, half_b.num_attention_heads,
            half_b.num_query_groups, half_b.ffn_hidden_size) == (24, 1024, 16, 16, 4096)
    for p in (one_b, half_b):
        assert p.init_method_std == 0.025 and p.norm_eps == 1e-5 and not p.tie_embeddings
        assert p.vocab_size == 128_256
    smol = get_preset("smollm2-135m")
    assert (smol.num_layers, smol.hidden_size, smol.num_attention_heads, smol.num_query_groups,
            smol.ffn_hidden_size, smol.vocab_size, smol.rotary_base, smol.tie_embeddings) == (
        30, 576, 9, 3, 1536, 49152, 100_000, True)
    llama = get_preset("llama3.2-1b")
    assert (llama.num_attention_heads, llama.num_query_groups, llama.ffn_hidden_size,
            llama.tie_embeddings, llama.rope_scaling) == (32, 8, 8192, True, True)


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ConfigError, match="choose from .*paper-1b.*tiny"):
        get_preset("gpt-5")


def test_transformer_config_is_a_llama():
    cfg = transformer_config(get_preset("paper-1b"), tp_size=2, bf16=False, seq_length=2048)
    assert cfg.normalization == "RMSNorm" and cfg.layernorm_epsilon == 1e-5
    assert cfg.gated_linear_unit and cfg.activation_func is F.silu
    assert not cfg.add_bias_linear and not cfg.add_qkv_bias
    assert cfg.num_query_groups == 16 and cfg.kv_channels == 128
    assert cfg.init_method_std == 0.025 and cfg.tensor_model_parallel_size == 2
    assert cfg.params_dtype == torch.float32 and not cfg.bf16
    assert cfg.use_cpu_initialization == (not torch.cuda.is_available())
    bf16 = transformer_config(get_preset("tiny"), tp_size=1, bf16=True, seq_length=64,
                              recompute_granularity="selective")
    assert bf16.params_dtype == torch.bfloat16 and bf16.recompute_granularity == "selective"


def test_transformer_config_rejects_too_long_sequences():
    with pytest.raises(ConfigError, match="--seq-length 4096 exceeds"):
        transformer_config(get_preset("paper-1b"), tp_size=1, bf16=False, seq_length=4096)


@pytest.mark.parametrize(
    "vocab, tp, padded", [(1000, 1, 1024), (1000, 2, 1024), (1100, 2, 1152), (128_256, 1, 128_256),
                          (128_256, 4, 128_256), (128_256, 8, 128_256), (49_152, 1, 49_152),
                          (1, 1, 128), (1000, 3, 1152)],
)
def test_pad_vocab_size(vocab, tp, padded):
    # The same padded size at every power-of-two TP size, so checkpoints reshard across TP.
    assert pad_vocab_size(vocab, tp) == padded
    assert padded % tp == 0


def test_validate_layout_messages():
    assert validate_layout(4, 2, 16, 16, 8, 64) == 2
    expected = "--tensor-model-parallel-size 3 does not divide num_attention_heads=16"
    with pytest.raises(ConfigError, match=expected):
        validate_layout(6, 3, 16, 16, 1, 2)
    with pytest.raises(ConfigError, match="does not divide the world size 3"):
        validate_layout(3, 2, 16, 16, 1, 2)
    with pytest.raises(ConfigError, match="num_query_groups=3"):
        validate_layout(2, 2, 6, 3, 1, 1)
    with pytest.raises(ConfigError, match="--global-batch-size 10 is not a multiple"):
        validate_layout(4, 1, 16, 16, 2, 10)


def test_backend_is_local_on_cpu_and_logged(caplog):
    with caplog.at_level(logging.INFO, logger="megatron_meta.models.build"):
        assert select_backend("auto") == "local"
    assert "layer spec: local (no CUDA)" in caplog.text
    with pytest.raises(ConfigError, match="needs CUDA"):
        select_backend("transformer_engine")
    with pytest.raises(ConfigError, match="choose from"):
        select_backend("apex")


def _fake_transformer_engine(tmp_path):
    pkg = tmp_path / "transformer_engine"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import os\nopen(os.environ['TE_MARK'], 'w').close()\n")
    (pkg / "pytorch.py").write_text("")
    return tmp_path


def test_cpu_never_imports_transformer_engine(tmp_path):
    """Even with transformer_engine installed, a CPU process does not import it."""
    site = _fake_transformer_engine(tmp_path)
    mark = tmp_path / "imported"
    script = textwrap.dedent(
        """
        import sys
        from megatron_meta.models.build import select_backend
        assert select_backend("auto") == "local"
        assert "transformer_engine" not in sys.modules
        """
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{site}", "TE_MARK": str(mark),
           "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not mark.exists()


def test_backend_choice_with_cuda(tmp_path, monkeypatch):
    """The decision on a GPU machine: TE when it imports, local otherwise."""
    monkeypatch.setattr(cpu, "cuda_available", lambda: True)
    monkeypatch.setattr(build_module, "_transformer_engine_importable", lambda: False)
    assert select_backend("auto") == "local"
    with pytest.raises(ConfigError, match="does not import"):
        select_backend("transformer_engine")
    monkeypatch.setattr(build_module, "_transformer_engine_importable", lambda: True)
    assert select_backend("auto") == "transformer_engine"
    assert select_backend("local") == "local"


@pytest.fixture(scope="module")
def single_process():
    from megatron_meta.parallel import destroy_parallel, initialize_parallel

    info = initialize_parallel(1, seed=3)
    yield info
    destroy_parallel()


def _matmul_weights(model) -> int:
    """Parameters that are matmul weights (all but norms; the embedding only if it is the head)."""
    total = 0
    for name, p in model.named_parameters():
        if "layernorm" in name or name.endswith("final_layernorm.weight"):
            continue
        tied = model.share_embeddings_and_output_weights
        if name.endswith("word_embeddings.weight") and not tied:
            continue  # a lookup, no FLOPs; the separate output_layer is the head
        total += p.numel()
    return total


def test_build_tiny_counts_and_trains(single_process):
    preset = get_preset("tiny")
    model = build_model(preset, vocab_size=1000, seq_length=32, tp_size=1)
    h, f, V, L = preset.hidden_size, preset.ffn_hidden_size, 1024, preset.num_layers
    q, kv = h, preset.num_query_groups * preset.head_dim
    per_layer = h * (q + 2 * kv) + q * h + 2 * f * h + f * h + 2 * h
    expected = V * h + L * per_layer + h + V * h  # embedding, layers, final norm, output layer
    assert sum(p.numel() for p in model.parameters()) == expected
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    assert not model.share_embeddings_and_output_weights
    # The FLOP count is 6 x matmul weights + causal attention (cross-check with the real model).
    s = 32
    attention = L * 2 * q * s
    assert forward_flops_per_token(preset, s, V) == 2 * _matmul_weights(model) + attention

    tokens = torch.randint(0, 1000, (2, s), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(s).unsqueeze(0).expand(2, -1)
    loss = model(tokens, positions, None, labels=tokens)
    assert loss.shape == (2, s)
    assert abs(loss.mean().item() - math.log(V)) < 0.5  # near-uniform at init
    loss.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_build_tied_preset(single_process):
    tied = with_overrides(get_preset("tiny"), tie_embeddings=True)
    model = build_model(tied, vocab_size=300, seq_length=16, tp_size=1)
    assert model.share_embeddings_and_output_weights
    assert "output_layer.weight" not in dict(model.named_parameters())
    logits = model(torch.zeros(1, 16, dtype=torch.long), torch.arange(16).unsqueeze(0), None)
    assert logits.shape == (1, 16, 384)


def test_build_refuses_mismatched_tp(single_process):
    with pytest.raises(ConfigError, match="initialized with TP=1"):
        build_model(get_preset("tiny"), vocab_size=100, seq_length=16, tp_size=2)


def test_sdpa_core_attention_matches_megatron_attention(single_process):
    """Swapping megatron's DotProductAttention for torch SDPA changes no numbers (GQA, causal)."""
    preset = get_preset("tiny")
    s = 24
    tokens = torch.randint(0, 200, (2, s), generator=torch.Generator().manual_seed(1))
    positions = torch.arange(s).unsqueeze(0).expand(2, -1)
    causal = torch.triu(torch.ones(1, 1, s, s, dtype=torch.bool), diagonal=1)  # True = masked
    outputs = {}
    for attention in ("megatron", "sdpa"):
        torch.manual_seed(11)  # the same draws: attention has no parameters
        model = build_model(preset, vocab_size=200, seq_length=s, tp_size=1,
                            core_attention=attention)
        logits = model(tokens, positions, None)
        logits.float().pow(2).mean().backward()
        grad = model.decoder.layers[0].self_attention.linear_qkv.weight.grad.clone()
        with torch.no_grad():
            masked = model(tokens, positions, causal)
        outputs[attention] = (logits.detach(), grad, masked)
    torch.testing.assert_close(outputs["sdpa"][0], outputs["megatron"][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outputs["sdpa"][1], outputs["megatron"][1], rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(outputs["sdpa"][2], outputs["megatron"][2], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outputs["sdpa"][2], outputs["sdpa"][0], rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="core attention"):
        build_model(preset, vocab_size=200, seq_length=s, tp_size=1, core_attention="flash")


def test_throughput_benchmark_runs_both_implementations(tmp_path):
    """The benchmark CLI end to end on a tiny shape (a smoke test, not a timing)."""
    pytest.importorskip("transformers")
    out = tmp_path / "bench.json"
    cmd = [sys.executable, os.path.join(REPO, "tools", "benchmark_throughput.py"),
           "--model", "tiny", "--seq-length", "32", "--micro-batch-size", "2", "--iters", "1", "--rounds", "2",
           "--threads", "1", "--json-out", str(out)]
    env = {**os.environ, "PYTHONPATH": REPO, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ratio ours / transformers" in result.stdout
    import json

    report = json.loads(out.read_text())
    names = [r["name"] for r in report["results"]]
    assert names == ["megatron-core (ours)", "transformers LlamaForCausalLM"]
    for r in report["results"]:
        assert r["tokens_per_s"] > 0 and r["tflops_per_device"] > 0 and r["mfu"] is None
        assert len(r["iteration_s"]) == 2
        assert 4.0 < r["first_loss"] < 9.0  # about ln(2048) at init: the models really ran
