"""Training throughput of a preset: tokens/s, TFLOP/s and MFU, and on the CPU a Hugging Face
``LlamaForCausalLM`` of the same shape, batch and thread count measured in the same run.

One iteration is what training does: forward, backward and optimizer step, through the same
pieces as ``megatron-meta train`` (``build_model``, megatron-core's DDP, ``build_optimizer``).
Inputs are random tokens; the loss is the mean next-token cross entropy.

    python tools/benchmark_throughput.py --model smollm2-135m --seq-length 512 --threads 2
    torchrun --nproc-per-node 2 tools/benchmark_throughput.py --model tiny \\
        --tensor-model-parallel-size 2
    # one GPU: bf16, Transformer Engine when installed
    python tools/benchmark_throughput.py --model paper-1b --seq-length 2048 --micro-batch-size 4

On a shared CPU the two models run in alternating rounds and each side keeps its best round, so
that load from other processes hits both alike. The process CPU time of each iteration is recorded
too: tokens per CPU-second barely moves with other processes' load (with one thread, exactly what
the work costs), while wall-clock tokens/s is what a user waits for.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, List, Optional

import torch

from megatron_meta.errors import ConfigError
from megatron_meta.models.build import build_model, pad_vocab_size
from megatron_meta.models.flops import flops_per_token, peak_flops
from megatron_meta.models.presets import PRESETS, ModelPreset, get_preset
from megatron_meta.platform import cpu as platform

logger = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    """What to measure."""

    model: str
    """Preset name."""
    tp: int
    """Tensor-parallel size (launch that many processes per data-parallel replica)."""
    micro_batch_size: int
    """Sequences per iteration per data-parallel rank."""
    seq_length: int
    """Tokens per sequence."""
    iters: int
    """Timed iterations per round."""
    warmup: int
    """Untimed iterations before the first round."""
    rounds: int
    """Rounds (alternating ours / HF on the CPU); each side reports its best round."""
    threads: Optional[int]
    """torch intra-op threads (default: torch's choice)."""
    vocab_size: Optional[int]
    """Vocabulary (default: the preset's)."""
    bf16: Optional[bool]
    """bf16 (default: on GPU) or fp32."""
    transformer_impl: str
    """auto, transformer_engine or local."""
    core_attention: str
    """Core attention of the local spec: sdpa (torch's fused kernel) or megatron."""
    peak_tflops: Optional[float]
    """Peak TFLOP/s per device for MFU (default: the device table)."""
    hf: bool
    """Also run Hugging Face's LlamaForCausalLM (CPU, one process)."""


@dataclass
class Result:
    """Throughput of one implementation."""

    name: str
    tokens_per_s: float
    tokens_per_s_per_device: float
    tflops_per_device: float
    mfu: Optional[float]
    first_loss: float
    """Loss of the first (untimed) iteration."""
    last_loss: float
    """Loss of the last timed iteration."""
    iteration_s: List[float]
    """Median wall-clock seconds per iteration of each round."""
    cpu_s: List[float]
    """Median process CPU seconds (all threads) per iteration of each round."""
    tokens_per_cpu_s: float
    """Tokens per process CPU-second per device, best round."""


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _round(step: Callable[[], float], iters: int) -> tuple[float, float, float]:
    """Median wall and CPU time per iteration of a round, and the last loss."""
    wall, cpu, loss = [], [], 0.0
    for _ in range(iters):
        start, start_cpu = time.perf_counter(), time.process_time()
        loss = step()
        _sync()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu), loss


def _batch(cfg: BenchConfig, vocab: int, device: torch.device, seed: int):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (cfg.micro_batch_size, cfg.seq_length + 1), generator=g)
    return tokens[:, :-1].contiguous().to(device), tokens[:, 1:].contiguous().to(device)


class OursStep:
    """One training iteration of our megatron-core model (DDP + the training optimizer)."""

    def __init__(self, cfg: BenchConfig, preset: ModelPreset, vocab: int, info):
        from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig

        from megatron_meta.training.config import OptimizerConfig
        from megatron_meta.training.optimizer import build_optimizer

        bf16 = platform.cuda_available() if cfg.bf16 is None else cfg.bf16
        model = build_model(preset, vocab_size=vocab, seq_length=cfg.seq_length, tp_size=cfg.tp,
                            backend=cfg.transformer_impl, bf16=bf16,
                            core_attention=cfg.core_attention)
        self.model = DistributedDataParallel(
            model.config, DistributedDataParallelConfig(grad_reduce_in_fp32=bf16), model
        )
        self.optimizer = build_optimizer(self.model, OptimizerConfig(lr=1e-4), bf16=bf16)
        self.tokens, self.labels = _batch(cfg, vocab, info.device, seed=info.dp_rank)
        self.positions = torch.arange(cfg.seq_length, device=info.device).unsqueeze(0).expand(
            cfg.micro_batch_size, -1)

    def __call__(self) -> float:
        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()
        loss = self.model(self.tokens, self.positions, None, labels=self.labels).float().mean()
        loss.backward()
        self.model.finish_grad_sync()
        self.optimizer.step()
        return loss.item()


class HFStep:
    """The same iteration for transformers' LlamaForCausalLM (sdpa attention), with what the
    transformers ``Trainer`` uses by default: fused torch AdamW (its default with torch >= 2.8)
    and gradient clipping at norm 1.0."""

    def __init__(self, cfg: BenchConfig, preset: ModelPreset, vocab: int):
        try:
            from transformers import LlamaConfig, LlamaForCausalLM
        except ImportError:
            raise ConfigError("the CPU comparison needs transformers: pip install -e '.[dev]' "
                              "(or pass --no-hf)") from None
        hf_config = LlamaConfig(
            vocab_size=vocab, hidden_size=preset.hidden_size,
            intermediate_size=preset.ffn_hidden_size, num_hidden_layers=preset.num_layers,
            num_attention_heads=preset.num_attention_heads,
            num_key_value_heads=preset.num_query_groups,
            max_position_embeddings=preset.max_position_embeddings, rope_theta=preset.rotary_base,
            rms_norm_eps=preset.norm_eps, tie_word_embeddings=preset.tie_embeddings,
            attention_bias=False, mlp_bias=False, initializer_range=preset.init_method_std,
            attn_implementation="sdpa",
        )
        self.model = LlamaForCausalLM(hf_config).float().train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, betas=(0.9, 0.95),
                                           eps=1e-8, weight_decay=0.01, fused=True)
        self.tokens, self.labels = _batch(cfg, vocab, torch.device("cpu"), seed=0)

    def __call__(self) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(input_ids=self.tokens).logits
        loss = torch.nn.functional.cross_entropy(
            logits.float().view(-1, logits.size(-1)), self.labels.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        return loss.item()


def _result(name: str, rounds: List[float], cpu_rounds: List[float], tokens_per_iter: int,
            world: int, fpt: float, peak: Optional[float], losses: tuple[float, float]) -> Result:
    tps = tokens_per_iter / min(rounds)
    per_device = tps / world
    tflops = per_device * fpt / 1e12
    return Result(name, tps, per_device, tflops, per_device * fpt / peak if peak else None,
                  *losses, iteration_s=rounds, cpu_s=cpu_rounds,
                  tokens_per_cpu_s=tokens_per_iter / world / min(cpu_rounds))


def run(cfg: BenchConfig) -> List[Result]:
    """Measure; every rank returns the same results (rank 0 prints them)."""
    from megatron_meta.parallel import destroy_parallel, initialize_parallel, validate_layout

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    preset = get_preset(cfg.model)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dp = validate_layout(world, cfg.tp, preset.num_attention_heads, preset.num_query_groups,
                         cfg.micro_batch_size, cfg.micro_batch_size * (world // max(cfg.tp, 1)))
    info = initialize_parallel(cfg.tp, seed=1234)
    try:
        vocab = pad_vocab_size(cfg.vocab_size or preset.vocab_size, cfg.tp)
        fpt = flops_per_token(preset, cfg.seq_length, vocab)
        peak = peak_flops(override=cfg.peak_tflops * 1e12 if cfg.peak_tflops else None)
        tokens_per_iter = cfg.micro_batch_size * cfg.seq_length * dp
        sides = {"megatron-core (ours)": OursStep(cfg, preset, vocab, info)}
        if cfg.hf:
            if world > 1 or platform.cuda_available():
                raise ConfigError("--hf compares on the CPU in one process (no torchrun, no GPU)")
            sides["transformers LlamaForCausalLM"] = HFStep(cfg, preset, vocab)
        rounds = {name: [] for name in sides}
        cpu_rounds = {name: [] for name in sides}
        first = {name: step() for name, step in sides.items()}  # builds lazy state, first loss
        for name, step in sides.items():
            for _ in range(max(cfg.warmup - 1, 0)):
                step()
        last = {}
        for r in range(cfg.rounds):
            for name, step in sides.items():
                wall, cpu_s, last[name] = _round(step, cfg.iters)
                rounds[name].append(wall)
                cpu_rounds[name].append(cpu_s)
                if info.rank == 0:
                    logger.info("round %d %s: %.3f s/iteration (%.3f CPU s)", r + 1, name, wall,
                                cpu_s)
        return [_result(n, rounds[n], cpu_rounds[n], tokens_per_iter, world, fpt, peak,
                        (first[n], last[n])) for n in sides]
    finally:
        destroy_parallel()


def format_report(cfg: BenchConfig, results: List[Result]) -> str:
    preset = get_preset(cfg.model)
    device = (torch.cuda.get_device_name() if platform.cuda_available()
              else f"CPU, {torch.get_num_threads()} threads")
    lines = [
        f"model {cfg.model} ({preset.num_layers} layers, hidden {preset.hidden_size}), "
        f"{cfg.core_attention if cfg.transformer_impl != 'transformer_engine' else 'TE'} "
        f"attention, TP {cfg.tp}, micro batch {cfg.micro_batch_size} x seq {cfg.seq_length}, "
        f"{device}, "
        f"torch {torch.__version__}",
        f"{'implementation':<32}{'tokens/s':>10}{'tok/s/dev':>11}{'TFLOP/s/dev':>12}{'MFU':>7}"
        f"{'tok/CPU-s':>11}  s/iter by round (CPU s)",
    ]
    for r in results:
        mfu = f"{100 * r.mfu:.1f}%" if r.mfu is not None else "n/a"
        its = " ".join(f"{s:.3f} ({c:.3f})" for s, c in zip(r.iteration_s, r.cpu_s))
        lines.append(f"{r.name:<32}{r.tokens_per_s:>10.1f}{r.tokens_per_s_per_device:>11.1f}"
                     f"{r.tflops_per_device:>12.4f}{mfu:>7}{r.tokens_per_cpu_s:>11.1f}  {its}")
    if len(results) == 2:
        ratio = results[0].tokens_per_s / results[1].tokens_per_s
        cpu_ratio = results[0].tokens_per_cpu_s / results[1].tokens_per_cpu_s
        lines.append(f"ratio ours / transformers: {ratio:.3f} wall-clock, {cpu_ratio:.3f} per "
                     "CPU-second (target >= 1.0)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmark_throughput.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", choices=sorted(PRESETS))
    p.add_argument("--tensor-model-parallel-size", type=int, default=1, dest="tp")
    p.add_argument("--micro-batch-size", type=int, default=1)
    p.add_argument("--seq-length", type=int, default=512)
    p.add_argument("--iters", type=int, default=3, help="timed iterations per round")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--vocab-size", type=int, default=None, help="default: the preset's")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--bf16", action="store_true", default=None)
    prec.add_argument("--fp32", action="store_false", dest="bf16")
    p.add_argument("--transformer-impl", default="auto",
                   choices=("auto", "transformer_engine", "local"))
    p.add_argument("--core-attention", default="sdpa", choices=("sdpa", "megatron"),
                   help="local spec only: torch SDPA or megatron's DotProductAttention")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="peak TFLOP/s per device for MFU (default: from the device table)")
    hf = p.add_mutually_exclusive_group()
    hf.add_argument("--hf", action="store_true", default=None,
                    help="also run transformers' LlamaForCausalLM "
                    "(default: on, in a single CPU process)")
    hf.add_argument("--no-hf", action="store_false", dest="hf")
    p.add_argument("--json-out", default=None, help="also write the results as JSON here")
    return p


def main(argv: List[str]) -> int:
    args = build_parser().parse_args(argv)
    single_cpu = not platform.cuda_available() and int(os.environ.get("WORLD_SIZE", "1")) == 1
    cfg = BenchConfig(
        model=args.model, tp=args.tp, micro_batch_size=args.micro_batch_size,
        seq_length=args.seq_length, iters=args.iters, warmup=args.warmup, rounds=args.rounds,
        threads=args.threads, vocab_size=args.vocab_size, bf16=args.bf16,
        transformer_impl=args.transformer_impl, core_attention=args.core_attention,
        peak_tflops=args.peak_tflops,
        hf=single_cpu if args.hf is None else args.hf,
    )
    results = run(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(format_report(cfg, results), flush=True)
        if args.json_out:
            tmp = args.json_out + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"config": asdict(cfg), "results": [asdict(r) for r in results]}, f,
                          indent=1)
            os.replace(tmp, args.json_out)
    return 0
