"""Weights & Biases logging (--wandb-project, --wandb-exp-name, --wandb-save-dir, Megatron-LM's
names): a real offline run of the wandb library, read back from its run directory."""

import glob
import json
import os

import pytest

from training_support import read_metrics, run_cli, tiny_args, write_corpus

wandb = pytest.importorskip("wandb")  # an optional extra: pip install 'megatron-meta[wandb]'


def wandb_records(path: str):
    """The protobuf records of a ``.wandb`` file: a 7-byte header, then LevelDB-log style
    chunks (CRC32 4, length 2, type 1: full/first/middle/last) in 32 KiB blocks."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # too little room for a header: the block is padded
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def history_of(run_dir: str):
    """Each history record of the offline run as {key: value}."""
    path = glob.glob(os.path.join(run_dir, "run-*.wandb"))[0]
    return [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            for r in wandb_records(path) if r.WhichOneof("record_type") == "history"]


def test_an_offline_wandb_run_holds_the_training_metrics(tmp_path):
    manifest = write_corpus(str(tmp_path / "corpus"), docs_per_region=8)
    save, wandb_dir = tmp_path / "run", tmp_path / "wb"
    out = run_cli(tiny_args(manifest, **{"--train-iters": 4, "--save": save,
                                         "--wandb-project": "mm-test", "--wandb-exp-name": "tiny-4",
                                         "--wandb-save-dir": wandb_dir}),
                  env_extra={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert out.returncode == 0, out.stderr[-3000:]
    runs = glob.glob(str(wandb_dir / "wandb" / "offline-run-*"))
    assert len(runs) == 1, os.listdir(wandb_dir)
    rows = [r for r in history_of(runs[0]) if "train/loss" in r]
    expected = read_metrics(str(save))
    assert [r["_step"] for r in rows] == [m["iteration"] for m in expected] == [1, 2, 3, 4]
    assert [r["train/loss"] for r in rows] == pytest.approx([m["loss"] for m in expected])
    assert all("train/lr" in r and "train/tokens_per_s" in r for r in rows[1:])
    names = [r.run.display_name for r in wandb_records(glob.glob(os.path.join(runs[0], "run-*.wandb"))[0])
             if r.WhichOneof("record_type") == "run"]
    assert "tiny-4" in names and open(save / "metrics.jsonl").read()  # metrics.jsonl stays
