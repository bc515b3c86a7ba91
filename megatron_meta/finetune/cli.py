"""``megatron-meta finetune``: LoRA instruction tuning, merging adapters, an offline instruction set.

    megatron-meta finetune --model M --data FILE --output DIR [--config examples/lora_paper.yaml]
        [--metadata-wrap] [--lora-r 256 --epochs 3 ...]
    megatron-meta finetune merge --adapter DIR --output MERGED_DIR
    megatron-meta finetune make-data --output news_instructions.jsonl [--max-articles 1000]

``--model`` is a Hugging Face folder or a megatron-meta checkpoint (converted on the way). The
data is Alpaca JSON or JSONL (instruction, input, output). Re-running the same command resumes
from the newest checkpoint in ``DIR/checkpoints``. Several GPUs:
``torchrun --nproc-per-node N -m megatron_meta.cli finetune ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
from typing import List

from megatron_meta.errors import ConfigError
from megatron_meta.finetune.config import FIELDS, load_recipe
from megatron_meta.outputs import check_output

logger = logging.getLogger(__name__)


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="megatron-meta finetune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="Hugging Face folder or megatron-meta checkpoint")
    p.add_argument("--data", required=True, help="Alpaca-format JSON or JSONL")
    p.add_argument("--output", required=True, help="run folder (checkpoints/, adapter/)")
    p.add_argument("--config", help="recipe YAML (default: the paper's, examples/lora_paper.yaml)")
    for name, f in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        doc = (f.metadata or {}).get("help", "")
        if name == "metadata_wrap":
            p.add_argument(flag, action="store_true", default=None,
                           help="wrap prompts in made-up metadata (the paper's metadata variant)")
        elif name == "protocol":
            p.add_argument(flag, choices=("ours", "paper"), help=doc)
        elif name == "target_modules":
            p.add_argument(flag, help="comma list (default: q,k,v,o,gate,up,down projections)")
        else:
            kind = {"int": int, "float": float, "Optional[int]": int}.get(str(f.type), float)
            p.add_argument(flag, type=kind, help=doc or f"recipe field {name}")
    return p


def _train(argv: List[str]) -> int:
    from megatron_meta.finetune.train import run_finetune

    args = _train_parser().parse_args(argv)
    check_output(args.output, "--output", overwrite=True, inputs=[args.model, args.data])
    recipe = load_recipe(args.config)
    overrides = {}
    for name in FIELDS:
        value = getattr(args, name)
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):  # inf/nan train to NaN
            raise ConfigError(f"--{name.replace('_', '-')} {value}: not a finite number")
        overrides[name] = [t.strip() for t in value.split(",") if t.strip()] if name == "target_modules" else value
    recipe = dataclasses.replace(recipe, **overrides).validate()
    adapter = run_finetune(args.model, args.data, args.output, recipe)
    if adapter:
        print(f"wrote {adapter}")
    return 0


def _merge_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="megatron-meta finetune merge",
                                description="merge a LoRA adapter into its base model")
    p.add_argument("--adapter", required=True, help="--output of finetune (or its adapter/)")
    p.add_argument("--output", required=True, help="folder of the standalone merged model")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --output, replacing only the files written here")
    return p


def _merge(argv: List[str]) -> int:
    from megatron_meta.finetune.merge import merge_adapter

    args = _merge_parser().parse_args(argv)
    print(f"wrote {merge_adapter(args.adapter, args.output, overwrite=args.overwrite)}")
    return 0


def _make_data_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="megatron-meta finetune make-data",
                                description="an offline instruction set from the news corpus")
    p.add_argument("--output", required=True, help="JSONL to write")
    p.add_argument("--max-articles", type=int, default=1000, help="articles used (2 records each)")
    p.add_argument("--seed", type=int, default=42)
    return p


def _make_data(argv: List[str]) -> int:
    from megatron_meta.finetune.instructions import build_news_instructions

    args = _make_data_parser().parse_args(argv)
    check_output(args.output, "--output", kind="file")
    n = build_news_instructions(args.output, args.max_articles, args.seed)
    print(f"wrote {n} instruction records to {args.output}")
    return 0


def parser_for(argv: List[str]):
    """(the parser of this ``finetune`` command line, its arguments): for study preflight."""
    if argv and argv[0] == "merge":
        return _merge_parser(), argv[1:]
    if argv and argv[0] == "make-data":
        return _make_data_parser(), argv[1:]
    return _train_parser(), argv


def main(argv: List[str]) -> int:
    if argv and argv[0] == "merge":
        return _merge(argv[1:])
    if argv and argv[0] == "make-data":
        return _make_data(argv[1:])
    return _train(argv)
