#!/usr/bin/env python
"""The GPU proof's driver (run by ``tools/gpu_proof.sh``): the ``gpu``-marked tests, then the
throughput benchmark on ``paper-1b`` (seq 2048) with Transformer Engine and with the local
spec; writes ``benchmarks/gpu.md`` with the device, driver, versions, each check, its outcome
and its figure, and what could not run here (no TE, one GPU) and why.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU_TESTS = ["tests/test_gpu.py", "tests/test_training_loop.py"]


def version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine() -> list:
    import torch

    try:
        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30).stdout.split("\n")[0].strip()
    except (OSError, subprocess.SubprocessError):
        driver = "unknown (no nvidia-smi)"
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return [
        f"- device: {torch.cuda.device_count()} x {names[0] if names else '?'}",
        f"- driver {driver}, CUDA {torch.version.cuda}, torch {torch.__version__}",
        f"- megatron-core {version('megatron-core')}, transformer-engine "
        f"{version('transformer-engine')}, apex {version('apex')}",
    ]


def run_tests(work: str, timeout: int) -> list:
    """(name, outcome, seconds, message) per gpu-marked test."""
    xml = os.path.join(work, "junit.xml")
    env = {**os.environ, "MM_GPU_PROOF_DIR": work, "PYTHONPATH": REPO}
    try:
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-rs",
                        f"--junitxml={xml}", *GPU_TESTS], cwd=REPO, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [("the gpu-marked tests", "ERROR", float(timeout), f"timed out after {timeout} s")]
    if not os.path.exists(xml):
        return [("the gpu-marked tests", "ERROR", 0.0, "pytest wrote no results")]
    rows = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "FAILED", "error": "ERROR", "skipped": "not run"}[tag]
                message = (node.get("message") or "").splitlines()[0][:200]
        rows.append((case.get("name"), outcome, float(case.get("time") or 0), message))
    return rows


def throughput(work: str, impl: str, timeout: int) -> dict:
    out = os.path.join(work, f"throughput_{impl}.json")
    cmd = [sys.executable, "tools/benchmark_throughput.py", "--model", "paper-1b",
           "--seq-length", "2048", "--micro-batch-size", "4", "--transformer-impl", impl,
           "--bf16", "--no-hf", "--iters", "5", "--rounds", "2", "--json-out", out]
    try:
        result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, "PYTHONPATH": REPO})
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if result.returncode != 0 or not os.path.exists(out):
        return {"error": (result.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    with open(out, encoding="utf-8") as f:
        data = json.load(f)
    return data["results"][0]


def report(rows, figures, bench, elapsed) -> str:
    lines = ["# GPU proof (`make gpu-proof`)", "",
             f"Written by `tools/gpu_proof.sh` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
             f" in {elapsed / 60:.1f} min.", ""] + machine()
    lines += ["", "## Checks (`pytest -m gpu`)", "", "| check | outcome | s | note |",
              "|---|---|---|---|"]
    for name, outcome, secs, message in rows:
        lines.append(f"| `{name}` | {outcome} | {secs:.0f} | {message} |")
    lines += ["", "## Figures", ""]
    for fig in figures:
        rest = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in fig.items() if k != "check")
        lines.append(f"- {fig['check']}: {rest}")
    lines += ["", "## Throughput: paper-1b, seq 2048, micro batch 4, bf16, one GPU", "",
              "| layer spec | tokens/s | TFLOP/s | MFU |", "|---|---|---|---|"]
    for impl, r in bench.items():
        if "error" in r:
            lines.append(f"| {impl} | not run: {r['error']} | | |")
        else:
            mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "n/a"
            lines.append(f"| {impl} | {r['tokens_per_s']:,.0f} | "
                         f"{r['tflops_per_device']:.1f} | {mfu} |")
    lines += ["", "Goal: >= 45% MFU on an H100 with Transformer Engine.", ""]
    missing = [f"`{n}`: {m}" for n, o, _, m in rows if o == "not run"]
    lines += ["## Not run here", ""] + ([f"- {m}" for m in missing] or ["- nothing"])
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=os.path.join(REPO, "benchmarks", "gpu.md"))
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="gpu-proof-") as work:
        rows = run_tests(work, timeout=400)
        figures = []
        path = os.path.join(work, "figures.jsonl")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                figures = [json.loads(line) for line in f if line.strip()]
        bench = {}
        if not args.skip_throughput:
            for impl in ("transformer_engine", "local"):
                bench[impl] = throughput(work, impl, timeout=90)
    text = report(rows, figures, bench, time.time() - start)
    tmp = args.output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, args.output)
    print(text)
    print(f"wrote {args.output}")
    return 1 if any(o in ("FAILED", "ERROR") for _, o, _, _ in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
