"""The CUDA training path, checked on the CPU (issue 12).

Each test builds what megatron-core builds on a GPU machine: the GPU ``TransformerConfig``
(``Kernels(cuda=True)``), megatron-core's own bf16 and distributed optimizers (run on the CPU
by ``megatron_optimizer_on_cpu.py``), or a layer carrying Transformer Engine's ``_extra_state``.
The error each gave before the fix is in its docstring.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from training_support import REPO, losses_by_iteration, read_metrics, run_cli, tiny_args, write_corpus

from megatron_meta.errors import CheckpointError, ConfigError
from megatron_meta.models import build_model, get_preset
from megatron_meta.models.build import block_spec, layer_spec
from megatron_meta.models.presets import Kernels, fusion_fields, transformer_config
from megatron_meta.parallel import ParallelInfo, destroy_parallel, initialize_parallel
from megatron_meta.platform.cpu import gpu_index
from megatron_meta.training import checkpoint as ckpt
from megatron_meta.training.trainer import forward_backward, overlap_grad_reduce

VOCAB, SEQ = 500, 32
SIMULATOR = os.path.join(REPO, "tests", "megatron_optimizer_on_cpu.py")
ENV = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=REPO)


@pytest.fixture(scope="module")
def parallel():
    info = initialize_parallel(1, seed=5)
    yield info
    destroy_parallel()


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("corpus")))


def batch(seed: int, size: int = 2):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(2, VOCAB, (size, SEQ + 1), generator=g)
    return {
        "tokens": text[:, :-1],
        "labels": text[:, 1:],
        "loss_mask": torch.ones(size, SEQ),
        "position_ids": torch.arange(SEQ).expand(size, -1),
    }


def simulate_train(args, timeout=240):
    """`megatron-meta train ARGS` with megatron-core's optimizer (bf16) on the CPU."""
    return subprocess.run(
        [sys.executable, SIMULATOR, *args], cwd=REPO, env=ENV, capture_output=True, text=True,
        timeout=timeout,
    )


# --------------------------------------------------------------------------------------------
# Defects 3 and 5: the GPU TransformerConfig


GPU_LOCAL = Kernels(cuda=True)  # CUDA; no TE, no fused softmax or wgrad extensions


def gpu_model(kernels: Kernels, core_attention: str):
    """A tiny local-spec model built from the GPU configuration (weights still on the CPU)."""
    from megatron.core.models.gpt import GPTModel

    preset = get_preset("tiny")
    config = transformer_config(
        preset, tp_size=1, bf16=True, seq_length=SEQ, kernels=kernels,
        use_cpu_initialization=True,  # this machine has no GPU to initialize on
    )
    spec = block_spec(layer_spec("local", core_attention), preset.num_layers, "local")
    return GPTModel(config=config, transformer_layer_spec=spec, vocab_size=512,
                    max_sequence_length=SEQ, position_embedding_type="rope")


@pytest.mark.skipif(torch.cuda.is_available(), reason="runs the GPU configuration on the CPU "
                    "path in this process; on a GPU, tests/test_gpu.py runs it for real")
def test_gpu_config_of_the_local_spec_builds_and_runs_in_bf16(parallel, monkeypatch):
    """Before: GPTModel raised ``AssertionError: persist_layer_norm not supported by torch
    LayerNorm`` (WrappedTorchNorm); with apex but no TE ``AssertionError: (RMSNorm) is not
    supported in FusedLayerNorm`` (final norm); with ``--core-attention megatron`` in bf16
    ``ModuleNotFoundError: No module named 'scaled_masked_softmax_cuda'``."""
    import megatron.core.transformer.transformer_block as transformer_block
    from megatron.core.fusions.fused_layer_norm import FusedLayerNorm

    fields = fusion_fields(GPU_LOCAL)
    assert not fields["persist_layer_norm"] and not fields["masked_softmax_fusion"]
    assert not fields["gradient_accumulation_fusion"] and not fields["apply_rope_fusion"]
    # What TransformerBlock picks as the final norm when apex imports and TE does not.
    monkeypatch.setattr(transformer_block, "LayerNormImpl", FusedLayerNorm)
    torch.manual_seed(0)
    model = gpu_model(GPU_LOCAL, "megatron").bfloat16()
    assert isinstance(model.decoder.final_layernorm, torch.nn.RMSNorm)  # WrappedTorchNorm's
    b = batch(1)
    loss = model(b["tokens"], b["position_ids"], None, labels=b["labels"])
    assert torch.isfinite(loss).all() and abs(loss.float().mean().item() - math.log(512)) < 0.5


def test_fusions_are_on_where_their_kernels_exist():
    """Before: apply_rope_fusion, cross-entropy fusion and gradient_accumulation_fusion were
    off with TE, masked_softmax_fusion and persist_layer_norm on whenever CUDA was."""
    te = fusion_fields(Kernels(cuda=True, transformer_engine=True))
    assert te["apply_rope_fusion"] and te["gradient_accumulation_fusion"]
    assert te["cross_entropy_loss_fusion"] and te["cross_entropy_fusion_impl"] == "te"
    assert not te["persist_layer_norm"] and not te["use_cpu_initialization"]
    apex = fusion_fields(Kernels(cuda=True, fused_softmax=True, fused_wgrad=True))
    assert apex["masked_softmax_fusion"] and apex["gradient_accumulation_fusion"]
    assert not apex["cross_entropy_loss_fusion"] and not apex["apply_rope_fusion"]
    cpu = fusion_fields(Kernels())
    assert cpu["use_cpu_initialization"] and not any(
        v for k, v in cpu.items() if k not in ("use_cpu_initialization", "cross_entropy_fusion_impl")
    )


def test_bf16_local_model_has_only_bf16_parameters(parallel):
    """Before: the five RMSNorm weights of the tiny model stayed fp32 (torch builds them so;
    megatron-core's Float16Module is what casts them in Megatron-LM)."""
    model = build_model(get_preset("tiny"), vocab_size=VOCAB, seq_length=SEQ, tp_size=1, bf16=True)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


# --------------------------------------------------------------------------------------------
# Defect 4: a TE-spec model reading a local-spec checkpoint


def _core_attention_with_extra_state(sharded: bool):
    """Our SDPA core attention carrying an ``_extra_state`` entry as Transformer Engine's
    ``DotProductAttention`` does (FP8 metadata; an empty tensor in bf16). ``sharded``: also in
    its sharded state dict (megatron's TE wrapper of 0.16.1 leaves it out, so it is then only
    in ``state_dict()``)."""
    from megatron.core.transformer.utils import make_sharded_object_for_checkpoint

    from megatron_meta.models.attention import SDPACoreAttention

    class CoreAttentionWithExtraState(SDPACoreAttention):
        def get_extra_state(self):
            return torch.zeros(0, dtype=torch.uint8)

        def set_extra_state(self, state):
            self.loaded_extra_state = state

        def sharded_state_dict(self, prefix="", sharded_offsets=(), metadata=None):
            if not sharded:
                return {}
            key = f"{prefix}_extra_state"
            return {key: make_sharded_object_for_checkpoint(
                self.get_extra_state(), key, sharded_offsets)}

    return CoreAttentionWithExtraState


@pytest.mark.parametrize("sharded", [False, True])
def test_local_checkpoint_loads_into_a_model_with_extra_state(parallel, tmp_path, sharded):
    """A local-spec checkpoint read by a model whose core attention has ``_extra_state``, as
    TE's. (megatron's local linears save an ``_extra_state`` of None themselves, so the linear
    layers' entries exist in a local checkpoint.) Before: ``load_weights`` raised
    ``RuntimeError: Error(s) in loading state_dict for GPTModel: Missing key(s) in state_dict:
    "decoder.layers.0.self_attention.core_attention._extra_state"`` (not sharded), or
    ``RuntimeError: Missing key in checkpoint state_dict:
    decoder.layers.self_attention.core_attention._extra_state/shard_0_2`` (sharded)."""
    from megatron.core.models.gpt import GPTModel

    from megatron_meta.checkpoints.write import save_state

    preset = get_preset("tiny")
    source = build_model(preset, vocab_size=VOCAB, seq_length=SEQ, tp_size=1, backend="local")
    identity = ckpt.model_identity(preset, VOCAB)
    root = str(tmp_path / "local")
    common = {"model_identity": identity, "weights_only": True, "consumed_samples": 0}
    save_state(root, 1, {"model": source.sharded_state_dict(), "iteration": 1,
                         "format_version": ckpt.FORMAT_VERSION, **common})

    spec = layer_spec("local", "sdpa")
    spec.submodules.self_attention.submodules.core_attention = (
        _core_attention_with_extra_state(sharded)
    )
    config = transformer_config(preset, tp_size=1, bf16=False, seq_length=SEQ)
    target = GPTModel(config=config, transformer_layer_spec=block_spec(spec, 2, "local"),
                      vocab_size=512, max_sequence_length=SEQ, position_embedding_type="rope")
    assert any(k.endswith("core_attention._extra_state") for k in target.state_dict())
    ckpt.load_weights(root, target, identity, "--pretrained-checkpoint")
    loaded = target.state_dict()
    for name, a in source.state_dict().items():
        if isinstance(a, torch.Tensor) and "_extra_state" not in name:
            assert torch.equal(a, loaded[name]), name

    # Anything else missing is still an error, naming the tensors (here: QK norms).
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    from megatron_meta.checkpoints.model_state import load_sharded

    qk_norm = get_gpt_layer_local_spec(normalization="RMSNorm", qk_layernorm=True)
    other = GPTModel(config=config, transformer_layer_spec=block_spec(qk_norm, 2, "local"),
                     vocab_size=512, max_sequence_length=SEQ, position_embedding_type="rope")
    with pytest.raises(CheckpointError, match="lacks 2 tensors this model needs .*q_layernorm"):
        load_sharded({"model": other.sharded_state_dict()}, ckpt.find_checkpoint(root), "test")


# --------------------------------------------------------------------------------------------
# Defect 1: the distributed optimizer's checkpoint

DISTRIBUTED_SAVE = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, "tests")
    from megatron_optimizer_on_cpu import simulate
    if __name__ == "__main__":
        simulate()
        from megatron.core import dist_checkpointing
        from megatron.core.dist_checkpointing.core import CheckpointingException
        from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
        from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
        from megatron_meta.models import build_model, get_preset
        from megatron_meta.parallel import ParallelInfo, initialize_parallel
        from megatron_meta.training.checkpoint import optimizer_sharded_state
        from megatron_meta.training.trainer import forward_backward
        initialize_parallel(1, 1)
        model = build_model(get_preset("tiny"), vocab_size=500, seq_length=16, tp_size=1, bf16=True)
        ddp = DistributedDataParallel(model.config, DistributedDataParallelConfig(
            grad_reduce_in_fp32=True, use_distributed_optimizer=True), model)
        opt = get_megatron_optimizer(OptimizerConfig(
            optimizer="adam", lr=1e-3, bf16=True, params_dtype=torch.bfloat16,
            use_distributed_optimizer=True), [ddp])
        t = torch.randint(0, 500, (2, 17))
        mb = {"tokens": t[:, :-1], "labels": t[:, 1:], "loss_mask": torch.ones(2, 16),
              "position_ids": torch.arange(16).expand(2, -1)}
        forward_backward(ddp, [mb], ParallelInfo(0, 1, 0, 1, 0, 1, 0, torch.device("cpu")))
        assert opt.step()[0]
        model_sd = model.sharded_state_dict()
        try:
            opt.sharded_state_dict(model_sd, is_loading=False)  # what the trainer called before
            print("OLD-CALL-SAVED")
        except CheckpointingException as e:
            print("OLD-CALL-REFUSED", e)
        state = {"model": model_sd, "optimizer": optimizer_sharded_state(opt, model_sd, False)}
        dist_checkpointing.save(state, sys.argv[1])
        shapes = {k: tuple(v.global_shape) for k, v in
                  dist_checkpointing.load_tensors_metadata(sys.argv[1]).items()}
        from megatron.core.dist_checkpointing.mapping import ShardedTensor
        params = {v.key: tuple(v.global_shape) for v in model_sd.values()
                  if isinstance(v, ShardedTensor)}
        for key, shape in params.items():
            assert shapes["optimizer.state.exp_avg." + key] == shape, key
            assert shapes["optimizer.state.exp_avg_sq." + key] == shape, key
        print("MODEL-SHAPED", len(params))
    """
)


def test_distributed_optimizer_checkpoint_is_saved_in_model_shapes(tmp_path):
    """Before: save_checkpoint called ``sharded_state_dict(model_sd, is_loading=False)``, which
    raised ``CheckpointingException: ShardedTensor.flattened_range is not supported``.
    Now the state is saved in each parameter's full shape (so it reshards over TP and DP)."""
    script = tmp_path / "save.py"
    script.write_text(DISTRIBUTED_SAVE)
    (tmp_path / "ckpt").mkdir()
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "ckpt")], cwd=REPO,
                            env=ENV, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OLD-CALL-REFUSED ShardedTensor.flattened_range is not supported" in result.stdout
    assert "MODEL-SHAPED" in result.stdout


def test_distributed_optimizer_with_torch_adamw_fallback_is_refused(manifest, tmp_path):
    """megatron-core 0.16.1 cannot reload this state into torch's AdamW (KeyError 'step'),
    which it uses without TE or apex: say so before training instead of at the first resume."""
    args = tiny_args(manifest, **{"--save": str(tmp_path / "run"), "--bf16": True,
                                  "--use-distributed-optimizer": True, "--train-iters": 1,
                                  "--lr-warmup-iters": 0})
    result = simulate_train(args)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "--use-distributed-optimizer needs Transformer Engine's or apex's" in result.stderr


# --------------------------------------------------------------------------------------------
# Defects 2, 6 and 8 (optimizer kinds) with megatron-core's bf16 optimizer


def test_pretrained_checkpoint_with_bf16_megatron_optimizer_keeps_the_weights(manifest, tmp_path):
    """Before: from the second iteration on the loss was back at a random model's (ln V): the
    optimizer's fp32 main weights, copied at construction, overwrote the loaded weights
    (iteration losses 4.10, 6.86, 6.94 after a source run ending at 4.81)."""
    source, tuned = str(tmp_path / "source"), str(tmp_path / "tuned")
    common = {"--bf16": True, "--lr": 1e-2, "--train-iters": 4}
    result = simulate_train(tiny_args(manifest, **{"--save": source, **common}))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "megatron-core Adam (bf16 with fp32 main weights)" in result.stderr
    src = losses_by_iteration(source)
    result = simulate_train(tiny_args(manifest, **{
        "--save": tuned, "--pretrained-checkpoint": source, "--bf16": True, "--lr": 1e-5,
        "--min-lr": 1e-6, "--train-iters": 2,
    }))
    assert result.returncode == 0, result.stderr[-3000:]
    new = losses_by_iteration(tuned)
    learned = src[1] - new[1]  # what the source run learned
    assert learned > 0.5, (src, new)
    assert abs(new[2] - new[1]) < 0.25 * learned, (src, new)

    # A megatron-optimizer checkpoint resumed by the CPU optimizer: a clear error.
    result = run_cli(tiny_args(manifest, **{"--save": source, "--train-iters": 6}))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "holds the state of the megatron-bf16 optimizer, this run uses the cpu-adamw" in (
        result.stderr
    )


def test_bf16_megatron_optimizer_resumes_where_it_stopped(manifest, tmp_path):
    """megatron-core's bf16 optimizer (fp32 main weights in its sharded state) through a save,
    an exit and a resume: the same losses as the uninterrupted run. Never run before issue 12
    (no GPU); the CPU runs it here."""
    whole, part = str(tmp_path / "whole"), str(tmp_path / "part")
    common = {"--bf16": True, "--train-iters": 4}
    for save, more in ((whole, {}), (part, {"--exit-interval": 2}), (part, {})):
        result = simulate_train(tiny_args(manifest, **{"--save": save, **common, **more}))
        assert result.returncode == 0, result.stderr[-3000:]
    reference, resumed = losses_by_iteration(whole), losses_by_iteration(part)
    assert sorted(resumed) == [1, 2, 3, 4]
    for i in range(1, 5):
        assert math.isclose(resumed[i], reference[i], rel_tol=1e-5), (reference, resumed)


def test_nonfinite_loss_stops_the_bf16_megatron_optimizer(manifest, tmp_path):
    """Before: megatron-core's bf16 optimizer (no loss scaler, so no inf check) applied the NaN
    step and the run went on to finish with NaN weights and exit code 0."""
    save = str(tmp_path / "run")
    args = tiny_args(manifest, **{"--save": save, "--bf16": True, "--lr": 1e15,
                                  "--lr-warmup-iters": 0, "--min-lr": 0, "--save-interval": 1})
    result = simulate_train(args)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "iteration 2: non-finite loss or gradient" in result.stderr
    assert ckpt.latest_checkpoint(save).endswith("iter_0000001")


# --------------------------------------------------------------------------------------------
# Defect 6 on the CPU optimizer; --on-nonfinite


def test_nonfinite_stop_and_skip_on_the_cpu_optimizer(manifest, tmp_path):
    """An lr of 1e15 makes the weights ~1e15 after step 1 and the loss NaN at iteration 2.
    stop (default): exit 2, one line naming the iteration, nothing saved after iteration 1.
    skip: every such step skipped and counted, the run ends normally."""
    stop, skip = str(tmp_path / "stop"), str(tmp_path / "skip")
    blowup = {"--lr": 1e15, "--lr-warmup-iters": 0, "--min-lr": 0, "--save-interval": 1,
              "--train-iters": 4}
    result = run_cli(tiny_args(manifest, **{"--save": stop, **blowup}))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = [l for l in result.stderr.splitlines() if "error:" in l]
    assert len(lines) == 1 and "iteration 2: non-finite loss or gradient" in lines[0]
    assert "newest checkpoint (iteration 1) is untouched" in lines[0]
    assert ckpt.latest_checkpoint(stop).endswith("iter_0000001")

    result = run_cli(tiny_args(manifest, **{"--save": skip, "--on-nonfinite": "skip", **blowup}))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "iteration 2: non-finite loss or gradient" in result.stderr
    last = read_metrics(skip)[-1]
    assert last["iteration"] == 4 and last["skipped_iterations"] == 3

    result = run_cli(tiny_args(manifest, **{"--on-nonfinite": "retry"}))
    assert result.returncode == 2 and "--on-nonfinite 'retry': choose stop or skip" in (
        result.stderr
    )


# --------------------------------------------------------------------------------------------
# Defect 8: prefetch, GPU choice, overlap_grad_reduce


def test_micro_batches_are_pulled_one_ahead_of_the_forward(parallel):
    """Before: forward_backward took a list, so a step's micro-batches were all loaded before
    its first forward. Now the next one is pulled just before the current forward."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig

    events = []
    model = build_model(get_preset("tiny"), vocab_size=VOCAB, seq_length=SEQ, tp_size=1,
                        bf16=False)
    model.register_forward_pre_hook(lambda m, a: events.append("forward"))
    ddp = DistributedDataParallel(model.config, DistributedDataParallelConfig(), model)

    def loader():
        for i in range(3):
            events.append(f"load{i}")
            yield batch(i)

    info = parallel
    ddp.zero_grad_buffer()
    loss = forward_backward(ddp, loader(), info)
    assert events == ["load0", "load1", "forward", "load2", "forward", "forward"]
    grads = [p.main_grad.clone() for p in model.parameters()]
    # The same as one micro-batch holding all three (mean over all tokens).
    whole = {k: torch.cat([batch(i)[k] for i in range(3)]) for k in batch(0)}
    ddp.zero_grad_buffer()
    assert forward_backward(ddp, [whole], info) == pytest.approx(loss, rel=1e-6)
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.main_grad, rtol=1e-4, atol=1e-6)


def test_gpu_index_and_overlap_default(monkeypatch):
    """Before: device() returned cuda:LOCAL_RANK even where each process sees one GPU."""
    assert gpu_index(3, 1) == 0  # srun --gpus-per-task=1
    assert gpu_index(3, 8) == 3
    with pytest.raises(ConfigError, match="LOCAL_RANK 4 but this process sees 2 GPUs"):
        gpu_index(4, 2)
    info = ParallelInfo(0, 16, 0, 1, 0, 16, 0, torch.device("cpu"))
    monkeypatch.setattr("megatron_meta.platform.cpu.cuda_available", lambda: True)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert overlap_grad_reduce(None, info) is True  # two nodes of 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert overlap_grad_reduce(None, info) is False  # one node
    assert overlap_grad_reduce(True, info) is True
