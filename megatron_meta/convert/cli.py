"""``megatron-meta convert``: checkpoints to and from Hugging Face Llama folders.

::

    # a trained run (any TP size it was saved at) -> a folder transformers loads
    megatron-meta convert to-hf --load runs/tiny-full --output hf/tiny-full [--dtype bfloat16]

    # a released model -> a checkpoint for `train --finetune` / `evaluate`
    megatron-meta convert from-hf --hf ~/models/SmolLM2-135M --save ckpt/smollm2
    megatron-meta convert from-hf --hf DIR --gguf-file model.Q4_1.gguf --save ckpt/m \\
        --tensor-model-parallel-size 3

Both run in one process on the CPU and write into a temporary folder renamed when complete.
"""

from __future__ import annotations

import argparse
from typing import List


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="megatron-meta convert",
        description="Convert checkpoints to and from Hugging Face (Llama architecture).",
    )
    sub = parser.add_subparsers(dest="direction", required=True)
    to_hf = sub.add_parser("to-hf", help="megatron-meta checkpoint -> Hugging Face folder")
    to_hf.add_argument("--load", required=True, metavar="CKPT",
                       help="a --save folder (newest checkpoint) or one iter_* folder")
    to_hf.add_argument("--output", required=True, metavar="DIR",
                       help="Hugging Face folder to write")
    to_hf.add_argument("--overwrite", action="store_true",
                       help="write into a non-empty --output, replacing only the files written here")
    to_hf.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                       help="dtype of the written weights (default: float32)")
    from_hf = sub.add_parser("from-hf", help="Hugging Face folder -> megatron-meta checkpoint")
    from_hf.add_argument("--hf", required=True, metavar="DIR",
                         help="local Hugging Face model folder")
    from_hf.add_argument("--gguf-file", metavar="NAME",
                         help="a GGUF file inside --hf (de-quantized through transformers)")
    from_hf.add_argument("--save", required=True, metavar="CKPT", help="checkpoint folder to write")
    from_hf.add_argument("--tensor-model-parallel-size", "--tp", type=int, default=1, metavar="N",
                         help="TP size to check the shape against and pad the vocabulary for "
                         "(default: 1; the checkpoint loads at any TP size dividing the heads)")
    return parser


def main(argv: List[str]) -> int:
    args = build_parser().parse_args(argv)
    from megatron_meta.tokenizer.load import quiet_megatron_logs

    quiet_megatron_logs()
    if args.direction == "to-hf":
        from megatron_meta.convert.to_hf import export_to_hf

        out = export_to_hf(args.load, args.output, args.dtype, overwrite=args.overwrite)
    else:
        from megatron_meta.convert.from_hf import import_from_hf

        out = import_from_hf(args.hf, args.save, args.tensor_model_parallel_size, args.gguf_file)
    print(out)
    return 0


if __name__ == "__main__":
    import sys

    from megatron_meta.cli import run_guarded, setup_logging

    setup_logging()
    sys.exit(run_guarded(main, sys.argv[1:], "megatron-meta convert"))
