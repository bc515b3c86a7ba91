"""Preprocessing benchmark (``tools/benchmark_preprocess.py``, ``make bench-preprocess``).

On the embedded news corpus replicated to at least ``--min-mb`` of formatted text, with one
SentencePiece BPE tokenizer (16k, trained here on the corpus) and the same number of workers for
every contender, all in one run:

* **ours**, one variant (``full``) and all seven variants in one pass (``run_preprocess``);
* **upstream**: Megatron-LM's ``tools/preprocess_data.py`` approach: one JSON line per call through
  ``Pool.imap(encode, lines, 32)``, ``tokenizer.tokenize`` per text, ``IndexedDatasetBuilder``
  writes in the main process (seven variants = seven texts per document);
* **bound**: the tokenizer alone: as many processes as workers, each batch-encoding an equal share
  of the already formatted texts held in its memory (``SentencePieceProcessor.encode(batch,
  return_type="numpy")``), no reading, writing or inter-process traffic. (SentencePiece's own
  ``num_threads`` gave no parallel speed-up here, hence processes.)

Throughput is documents/s and MB/s of formatted (``full``) text, the same numerator for all, so
the ratios are ratios of wall time. Each timing is the best of ``--repeats`` (the machine may be
shared). Peak memory: ``megatron-meta preprocess`` run as a subprocess on 1x and 2x the input,
sampling the RSS of its process tree (main + workers; RSS double-counts pages shared after fork,
so the sum is an upper bound) and PSS where the kernel provides it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Tuple

from megatron_meta.corpora.bad_records import BadRecords
from megatron_meta.corpora.records import Document
from megatron_meta.corpora.registry import CorpusSpec, iter_documents
from megatron_meta.metadata.formatting import VARIANTS, format_document

logger = logging.getLogger(__name__)

# -- corpus and tokenizer ---------------------------------------------------------------------


def news_documents() -> List[Document]:
    from megatron_meta.corpora.news_articles import fetch_news_articles

    spec = CorpusSpec(inputs=[fetch_news_articles()], format="news-articles")
    return list(iter_documents(spec, BadRecords("skip", log_first=0)))


def replicate(docs: List[Document], path: str, min_bytes: int) -> Tuple[int, int]:
    """Write copies of ``docs`` (ids suffixed) as JSONL until the full-format text reaches
    ``min_bytes``; returns (documents, formatted bytes)."""
    n = size = copy = 0
    with open(path, "w", encoding="utf-8") as f:
        while size < min_bytes:
            for doc in docs:
                record = doc.to_json()
                record["id"] = f"{doc.id}#{copy}"
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                size += len(format_document(doc, "full").encode("utf-8"))
                n += 1
                if size >= min_bytes:
                    break
            copy += 1
    return n, size


def read_jsonl_documents(path: str) -> List[Document]:
    with open(path, encoding="utf-8") as f:
        return [Document.from_json(json.loads(line)) for line in f]


# -- upstream Megatron-LM approach ------------------------------------------------------------
_UPSTREAM: Dict[str, object] = {}


def _upstream_init(tokenizer_model: str, variants: List[str]) -> None:
    from megatron_meta.tokenizer import load_tokenizer

    _UPSTREAM["tok"] = load_tokenizer("SentencePieceTokenizer", tokenizer_model)
    _UPSTREAM["variants"] = variants


def _upstream_encode(line: str):
    tok, variants = _UPSTREAM["tok"], _UPSTREAM["variants"]
    doc = Document.from_json(json.loads(line))
    out = {}
    for v in variants:
        ids = tok.tokenize(format_document(doc, v))
        ids.append(tok.eod)
        out[v] = ids
    return out, len(line)


def time_upstream(jsonl: str, model: str, variants: List[str], workers: int, out_dir: str) -> float:
    """Megatron-LM preprocess_data.py's structure, with our formatting applied per document."""
    import multiprocessing

    import numpy as np
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    start = time.perf_counter()
    pool = multiprocessing.get_context("fork").Pool(workers, _upstream_init, (model, variants))
    builders = {
        v: IndexedDatasetBuilder(os.path.join(out_dir, f"up_{v}.bin"), dtype=np.uint16)
        for v in variants
    }
    with open(jsonl, encoding="utf-8") as fin:
        for doc, _ in pool.imap(_upstream_encode, fin, 32):
            for v in variants:
                builders[v].add_document(doc[v], [len(doc[v])])
    for v in variants:
        builders[v].finalize(os.path.join(out_dir, f"up_{v}.idx"))
    pool.close()
    pool.join()
    return time.perf_counter() - start


# -- ours and the bound -----------------------------------------------------------------------


def time_ours(jsonl: str, model: str, variants: List[str], workers: int, out_dir: str) -> float:
    from megatron_meta.preprocess.runner import PreprocessConfig, run_preprocess

    config = PreprocessConfig(
        corpus=CorpusSpec(inputs=[jsonl]),
        output_prefix=os.path.join(out_dir, "ours"),
        tokenizer_type="SentencePieceTokenizer",
        tokenizer_model=model,
        variants=variants,
        append_eod=True,
        workers=workers,
        progress_bar=False,
        log_interval=10**9,
    )
    start = time.perf_counter()
    run_preprocess(config)
    return time.perf_counter() - start


_BOUND: Dict[str, object] = {}


def _bound_init(model: str) -> None:
    import sentencepiece as spm

    _BOUND["sp"] = spm.SentencePieceProcessor(model_file=model)


def _bound_encode(span: Tuple[int, int]) -> int:
    sp, texts = _BOUND["sp"], _BOUND["texts"]
    lo, hi = span
    for i in range(lo, hi, 512):
        sp.encode(texts[i : min(i + 512, hi)], num_threads=1, return_type="numpy")
    return hi - lo


def time_bound(texts: List[str], model: str, workers: int) -> float:
    """Tokenizer only: ``workers`` processes batch-encode equal shares of the formatted texts,
    already in their memory (forked after formatting); no reading, no writing, no IPC of text."""
    import multiprocessing

    _BOUND["texts"] = texts
    sizes = [0]
    for t in texts:
        sizes.append(sizes[-1] + len(t))
    cuts = (
        [0]
        + [
            next(i for i, s in enumerate(sizes) if s >= sizes[-1] * k / workers)
            for k in range(1, workers)
        ]
        + [len(texts)]
    )
    with multiprocessing.get_context("fork").Pool(workers, _bound_init, (model,)) as pool:
        pool.map(len, [[]] * workers)  # workers are up and have loaded the model
        start = time.perf_counter()
        done = sum(pool.map(_bound_encode, list(zip(cuts, cuts[1:])), chunksize=1))
        seconds = time.perf_counter() - start
    assert done == len(texts)
    return seconds


# -- memory -----------------------------------------------------------------------------------


def peak_memory(cmd: List[str]) -> Dict[str, float]:
    """Run ``cmd``; sample RSS (and PSS) of its process tree; returns peaks in MB and seconds."""
    import psutil

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peaks = {"main_rss": 0.0, "tree_rss": 0.0, "tree_pss": 0.0}
    stop = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                procs = [root] + root.children(recursive=True)
                rss = [p.memory_info().rss for p in procs]
                peaks["main_rss"] = max(peaks["main_rss"], rss[0] / 2**20)
                peaks["tree_rss"] = max(peaks["tree_rss"], sum(rss) / 2**20)
                try:
                    pss = sum(p.memory_full_info().pss for p in procs)
                    peaks["tree_pss"] = max(peaks["tree_pss"], pss / 2**20)
                except (AttributeError, psutil.AccessDenied):
                    pass
            except psutil.NoSuchProcess:
                pass
            stop.wait(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    thread.start()
    _, err = proc.communicate()
    peaks["seconds"] = time.perf_counter() - start
    stop.set()
    thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    return peaks


# -- report -----------------------------------------------------------------------------------


def cpu_seconds() -> float:
    """User + system CPU time of this process and its reaped children (pool workers)."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def measure(fn) -> Tuple[float, float]:
    """(wall seconds, CPU seconds of all processes) of ``fn()``."""
    cpu = cpu_seconds()
    wall = fn()
    return wall, cpu_seconds() - cpu


def machine() -> str:
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
        f"Python {platform.python_version()}, load average at start "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmark_preprocess.py", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--min-mb", type=float, default=50.0, help="formatted text of the 1x input")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--vocab-size", type=int, default=16000)
    p.add_argument("--repeats", type=int, default=3, help="best of N for each timing")
    p.add_argument("--work-dir", help="keep inputs and the tokenizer here (default: a temp dir)")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 MB, one repeat")
    p.add_argument(
        "--skip-upstream-all",
        action="store_true",
        help="skip the (slow) upstream run with all seven variants",
    )
    return p


def main(argv: List[str]) -> int:
    from megatron_meta.tokenizer.load import quiet_megatron_logs
    from megatron_meta.tokenizer.train import train_sentencepiece

    quiet_megatron_logs()
    args = build_parser().parse_args(argv)
    if args.quick:
        args.min_mb, args.repeats, args.skip_upstream_all = 2.0, 1, True
    work = args.work_dir or tempfile.mkdtemp(prefix="bench-preprocess-")
    os.makedirs(work, exist_ok=True)
    out_dir = os.path.join(work, "out")
    docs = news_documents()
    x1, x2 = (
        os.path.join(work, f"news_{args.min_mb:g}mb.jsonl"),
        os.path.join(work, f"news_{2 * args.min_mb:g}mb.jsonl"),
    )
    n_docs, n_bytes = replicate(docs, x1, int(args.min_mb * 1e6))
    replicate(docs, x2, int(2 * args.min_mb * 1e6))
    model = os.path.join(work, f"sp_bpe_{args.vocab_size}.model")
    if not os.path.exists(model):
        train_sentencepiece((format_document(d, "full") for d in docs), model[:-6], args.vocab_size)
    texts = [format_document(d, "full") for d in read_jsonl_documents(x1)]
    print(f"machine: {machine()}")
    print(
        f"input: {n_docs} documents, {n_bytes / 1e6:.1f} MB of formatted text "
        f"({os.path.getsize(x1) / 1e6:.1f} MB JSONL); tokenizer: SentencePiece BPE "
        f"{args.vocab_size}; workers: {args.workers}; best of {args.repeats}"
    )

    def fresh() -> str:
        shutil.rmtree(out_dir, ignore_errors=True)
        os.makedirs(out_dir)
        return out_dir

    all_v = list(VARIANTS)
    runs = {
        "bound": lambda: time_bound(texts, model, args.workers),
        "ours_1": lambda: time_ours(x1, model, ["full"], args.workers, fresh()),
        "upstream_1": lambda: time_upstream(x1, model, ["full"], args.workers, fresh()),
        "ours_7": lambda: time_ours(x1, model, all_v, args.workers, fresh()),
    }
    time_ours(x1, model, ["full"], args.workers, fresh())  # warm-up: imports, page cache
    wall: Dict[str, float] = {}
    cpu: Dict[str, float] = {}
    for _ in range(args.repeats):  # interleaved, so a burst of outside load hits all alike
        for key, fn in runs.items():
            w, c = measure(fn)
            if w < wall.get(key, float("inf")):
                wall[key], cpu[key] = w, c
    if not args.skip_upstream_all:
        wall["upstream_7"], cpu["upstream_7"] = measure(
            lambda: time_upstream(x1, model, all_v, args.workers, fresh())
        )

    rows = [
        ("tokenizer-only bound", "bound"),
        ("ours, 1 variant", "ours_1"),
        ("upstream approach, 1 variant", "upstream_1"),
        ("ours, 7 variants", "ours_7"),
        ("upstream approach, 7 variants", "upstream_7"),
    ]
    print(
        "\n| run | wall s | docs/s | MB/s | throughput vs bound | CPU s (all processes) |"
        "\n|---|---:|---:|---:|---:|---:|"
    )
    for label, key in rows:
        if key in wall:
            s = wall[key]
            print(
                f"| {label} | {s:.2f} | {n_docs / s:,.0f} | {n_bytes / 1e6 / s:.2f} | "
                f"{wall['bound'] / s:.3f} | {cpu[key]:.1f} |"
            )
    print(
        f"\nours 1 variant / bound throughput: {wall['bound'] / wall['ours_1']:.3f} "
        "(target >= 0.95); "
        f"CPU-time ratio bound / ours: {cpu['bound'] / cpu['ours_1']:.3f}"
    )
    print(
        "ours 1 variant / upstream 1 variant throughput: "
        f"{wall['upstream_1'] / wall['ours_1']:.2f}x"
    )
    print(
        f"ours 7 variants / ours 1 variant time: {wall['ours_7'] / wall['ours_1']:.2f} "
        f"(target <= 1.3); CPU: {cpu['ours_7'] / cpu['ours_1']:.2f}"
    )
    if "upstream_7" in wall:
        print(
            "upstream 7 variants / upstream 1 variant time: "
            f"{wall['upstream_7'] / wall['upstream_1']:.2f}"
        )
    print(f"load average at end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")

    cli = [
        sys.executable,
        "-m",
        "megatron_meta.cli",
        "preprocess",
        "--tokenizer-type",
        "SentencePieceTokenizer",
        "--tokenizer-model",
        model,
        "--metadata-variants",
        "full",
        "--append-eod",
        "--workers",
        str(args.workers),
        "--no-progress",
    ]
    print(
        "\n| input | peak RSS main (MB) | peak RSS sum of processes (MB) | peak PSS sum (MB) |"
        "\n|---|---:|---:|---:|"
    )
    for label, path in (("1x", x1), ("2x", x2)):
        m = peak_memory(cli + ["--input", path, "--output-prefix", os.path.join(fresh(), "mem")])
        print(
            f"| {label} ({os.path.getsize(path) / 1e6:.0f} MB JSONL) | {m['main_rss']:.0f} | "
            f"{m['tree_rss']:.0f} | {m['tree_pss']:.0f} |"
        )
    shutil.rmtree(out_dir, ignore_errors=True)
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0
