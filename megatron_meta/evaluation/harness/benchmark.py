"""Our log-likelihood MCQ scoring against lm-evaluation-harness, in one process, on one model.

Both arms score the same questions with the same contexts (the task of :mod:`.task`), with
and without metadata; the report gives each arm's accuracy, how many per-question choices agree,
and the wall time of each arm (model loading included in both) with their ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from typing import List

import torch


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(prog="benchmark_mcq_harness.py", description=__doc__)
    p.add_argument("--model", required=True, help="Hugging Face folder")
    p.add_argument("--benchmark", required=True, help="benchmark JSONL")
    p.add_argument("--limit", type=int, help="first N questions (default: all)")
    p.add_argument("--harness-batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="torch threads in both arms")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from megatron_meta.evaluation.harness.run import run_harness
    from megatron_meta.evaluation.harness.task import write_harness_tasks
    from megatron_meta.evaluation.mcq.score import McqConfig, score_model
    from megatron_meta.evaluation.mcq.data import read_benchmark

    questions = read_benchmark(args.benchmark)[: args.limit]
    n = len(questions)
    with tempfile.TemporaryDirectory() as tasks:
        names = write_harness_tasks(args.benchmark, tasks)
        # Process CPU time beside wall time: on a shared machine other processes' load shifts the
        # wall time of one arm against the other, hardly the CPU time (both run single-threaded).
        start, cpu = time.perf_counter(), time.process_time()
        ours = score_model(args.model, questions, McqConfig([args.model], args.benchmark), "m")
        ours_s, ours_cpu = time.perf_counter() - start, time.process_time() - cpu
        start, cpu = time.perf_counter(), time.process_time()
        theirs = run_harness(args.model, tasks, names, limit=n, batch_size=args.harness_batch_size)
        theirs_s, theirs_cpu = time.perf_counter() - start, time.process_time() - cpu
    lines = [f"questions: {n} x 2 settings; model {args.model}; torch threads {args.threads}; "
             f"harness batch size {args.harness_batch_size}; {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs", "",
             "| setting | ours acc | harness acc | ours acc_norm | harness acc_norm | same choice | same choice (norm) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for setting, name in zip(("with", "without"), names):
        mine = {r["question"]: r for r in ours if r["setting"] == setting}
        h = theirs[name]
        same = sum(mine[i]["chosen"] == h[i]["chosen"] for i in mine)
        same_norm = sum(mine[i]["chosen_norm"] == h[i]["chosen_norm"] for i in mine)
        acc = sum(r["correct"] for r in mine.values()) / n
        acc_norm = sum(r["correct_norm"] for r in mine.values()) / n
        h_acc = sum(h[i]["chosen"] == questions[i].answer for i in mine) / n
        h_norm = sum(h[i]["chosen_norm"] == questions[i].answer for i in mine) / n
        lines.append(f"| {setting} metadata | {100 * acc:.2f} | {100 * h_acc:.2f} | {100 * acc_norm:.2f} "
                     f"| {100 * h_norm:.2f} | {same}/{n} | {same_norm}/{n} |")
    lines += ["", f"wall time: ours {ours_s:.1f} s, lm_eval {theirs_s:.1f} s; "
              f"lm_eval / ours = {theirs_s / ours_s:.2f}x",
              f"CPU time:  ours {ours_cpu:.1f} s, lm_eval {theirs_cpu:.1f} s; "
              f"lm_eval / ours = {theirs_cpu / ours_cpu:.2f}x (model loading included in both)"]
    print("\n".join(lines))
    return 0
