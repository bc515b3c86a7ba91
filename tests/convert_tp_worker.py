"""Run by torchrun (N ranks): load a checkpoint at TP=N and save the full logits of token ids.

Usage: python -m torch.distributed.run --nproc-per-node N tests/convert_tp_worker.py CKPT IDS OUT
(IDS and OUT are torch.save files: a [batch, seq] LongTensor in, [batch, seq, vocab] logits out).
"""

import os
import sys

import torch


def main(ckpt: str, ids_path: str, out_path: str) -> None:
    import torch.distributed as dist
    from megatron.core import parallel_state

    from megatron_meta.checkpoints.load import load_model_for_eval
    from megatron_meta.parallel import destroy_parallel

    tp = int(os.environ["WORLD_SIZE"])
    model, info = load_model_for_eval(ckpt, tp=tp)
    ids = torch.load(ids_path)
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    with torch.no_grad():
        local = model(ids, positions, None).contiguous()  # this rank's vocabulary half
    group = parallel_state.get_tensor_model_parallel_group()
    parts = [torch.empty_like(local) for _ in range(tp)]
    dist.all_gather(parts, local, group=group)
    if dist.get_rank() == 0:
        torch.save(torch.cat(parts, dim=-1)[..., : info.vocab_size], out_path)
    destroy_parallel()


if __name__ == "__main__":
    main(*sys.argv[1:4])
