#!/usr/bin/env python
"""Conversion benchmark: a ``paper-1b``-shaped checkpoint (random weights) to Hugging Face and
back, each direction in its own process: seconds, peak RSS, and both against the fp32 weight bytes.

    python tools/benchmark_convert.py --model paper-1b --workdir /tmp/bench-convert

Goal (issue 6): peak RSS under 2x the fp32 weight bytes; time dominated by I/O (compare with the
``read+write`` line: copying the same bytes with ``cp``).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time


def make_checkpoint(model: str, vocab: int, save: str) -> None:
    import torch

    from megatron_meta.checkpoints import FORMAT_VERSION, model_identity
    from megatron_meta.checkpoints.write import save_state
    from megatron_meta.models import build_model, get_preset
    from megatron_meta.parallel import destroy_parallel, initialize_parallel

    initialize_parallel(1, seed=0)
    preset = get_preset(model)
    net = build_model(preset, vocab_size=vocab, seq_length=2048, tp_size=1, backend="local",
                      bf16=False, init_weights=False)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.02)
    tokenizer = {"type": "NullTokenizer", "model": "", "vocab_size": vocab, "eod_id": 0}
    config = {"model": {"preset": model, "seq_length": 2048}}
    save_state(save, 1, {"model": net.sharded_state_dict(), "format_version": FORMAT_VERSION,
                         "iteration": 1, "consumed_samples": 0, "config": config,
                         "model_identity": model_identity(preset, vocab), "tokenizer": tokenizer,
                         "layout": {"world_size": 1, "tp": 1, "dp": 1}, "weights_only": True})
    destroy_parallel()


# Runs ``cmd`` under a fresh Python whose only child it is, so that child's peak RSS is its own.
_PEAK = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
    "stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def timed(cmd):
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _PEAK, *cmd], check=True, capture_output=True,
                         text=True).stdout
    seconds = time.perf_counter() - start
    return seconds, int(out.strip().splitlines()[-1]) * 1024


def du(path: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="paper-1b")
    ap.add_argument("--vocab", type=int, default=128_256)
    ap.add_argument("--workdir", default="/tmp/bench-convert")
    args = ap.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    ckpt, hf, back = (os.path.join(args.workdir, n) for n in ("ckpt", "hf", "back"))
    make_checkpoint(args.model, args.vocab, ckpt)
    weights = du(os.path.join(ckpt, "iter_0000001"))
    cli = [sys.executable, "-m", "megatron_meta.cli", "convert"]
    to_s, to_rss = timed(cli + ["to-hf", "--load", ckpt, "--output", hf])
    copy = os.path.join(args.workdir, "copy")
    copy_s, _ = timed(["cp", "-r", os.path.join(ckpt, "iter_0000001"), copy])
    from_s, from_rss = timed(cli + ["from-hf", "--hf", hf, "--save", back])
    gb = 1024**3
    rows = {
        "model": args.model, "fp32 weight bytes (GiB)": round(weights / gb, 2),
        "to-hf seconds": round(to_s, 1), "to-hf peak RSS (GiB)": round(to_rss / gb, 2),
        "to-hf RSS / weights": round(to_rss / weights, 2),
        "from-hf seconds": round(from_s, 1), "from-hf peak RSS (GiB)": round(from_rss / gb, 2),
        "from-hf RSS / weights": round(from_rss / weights, 2),
        "cp of the checkpoint (s)": round(copy_s, 1),
    }
    print(json.dumps(rows, indent=2))
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
