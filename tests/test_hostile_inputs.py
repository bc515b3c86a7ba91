"""Every command against a hostile user: bad output paths, full disks, corrupted inputs, non-finite
numbers and unsafe names. One table; a new command gets every check by adding rows.

Each row runs the real CLI (in this process, for speed) and must end with exit status 2, exactly
one error line naming the file or flag, no traceback, every file that existed before unchanged and
nothing new left behind (no output, no temporaries). Full-disk rows write onto a real, tiny tmpfs
(skipped where it cannot be mounted).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Callable, List, Optional

import pytest
from hostile_support import error_lines, small_disk, snapshot, truncate
from training_support import REPO, run_cli, tiny_args, write_corpus

from megatron_meta.cli import main as cli_main


@dataclasses.dataclass
class World:
    """Inputs every row may read (built once) and the row's own folder."""

    base: str
    manifest: str  # training shards (NullTokenizer) + manifest
    save: str  # a --save folder with checkpoints at iterations 3 and 6
    hf: str  # that model as a Hugging Face folder
    jsonl: str  # a small news-like corpus
    tokenizer: str  # a SentencePiece model for it
    adapter: str  # a LoRA adapter folder whose base is `hf`
    case: str = ""

    def at(self, *parts: str) -> str:
        return os.path.join(self.case, *parts)

    def copy(self, what: str, name: str) -> str:
        target = self.at(name)
        (shutil.copytree if os.path.isdir(what) else shutil.copy)(what, target)
        return target

    def file(self, name: str, text: str = "user data\n") -> str:
        path = self.at(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    from preprocess_fixtures import make_documents, training_texts, write_jsonl

    from megatron_meta.convert.to_hf import export_to_hf
    from megatron_meta.tokenizer.train import train_sentencepiece

    base = str(tmp_path_factory.mktemp("world"))
    manifest = write_corpus(os.path.join(base, "data"), docs_per_region=24)
    save = os.path.join(base, "run")
    done = run_cli(tiny_args(manifest, **{"--save": save, "--save-interval": 3}))
    assert done.returncode == 0, done.stderr[-2000:]
    hf = export_to_hf(save, os.path.join(base, "hf"))
    docs = make_documents(24)
    jsonl = write_jsonl(os.path.join(base, "corpus.jsonl"), docs)
    tokenizer = train_sentencepiece(training_texts(docs), os.path.join(base, "sp"), 500,
                                    num_threads=1)
    adapter = os.path.join(base, "adapter")
    os.makedirs(adapter)
    with open(os.path.join(adapter, "adapter_config.json"), "w", encoding="utf-8") as f:
        json.dump({"base_model_name_or_path": hf, "peft_type": "LORA"}, f)
    return World(base, manifest, save, hf, jsonl, tokenizer, adapter)


@dataclasses.dataclass
class Row:
    id: str
    argv: Callable[[World], List[str]]
    expect: Callable[[World], str]  # a part of the one error line (names the file or flag)
    disk: Optional[str] = None  # tmpfs size mounted at World.at("disk") for this row
    read_only: bool = False


def _train(w: World, *extra: str, manifest: Optional[str] = None) -> List[str]:
    return ["train", *tiny_args(manifest or w.manifest), *extra]


def _preprocess(w: World, prefix: str) -> List[str]:
    return ["preprocess", "--input", w.jsonl, "--output-prefix", prefix, "--tokenizer-type",
            "SentencePieceTokenizer", "--tokenizer-model", w.tokenizer, "--no-progress"]


def _data_copy(w: World) -> str:
    """A copy of the training data in the row's folder; returns its manifest."""
    w.copy(os.path.dirname(w.manifest), "data")
    return w.at("data", os.path.basename(w.manifest))


def _damaged_manifest(w: World, content: bytes) -> str:
    path = w.at("bad.manifest.json")
    with open(path, "wb") as f:
        f.write(content)
    return path


def _cut_shard(w: World) -> str:
    manifest = _data_copy(w)
    truncate(w.at("data", "corpus_full_Africa.bin"))
    return manifest


def _newest_iter(w: World) -> str:
    return os.path.join(w.copy(w.save, "run"), "iter_0000006")


def _cut_checkpoint(w: World) -> str:
    truncate(os.path.join(_newest_iter(w), "__0_0.distcp"))
    return w.at("run")


def _delete_tensor_file(w: World) -> str:
    os.remove(os.path.join(_newest_iter(w), "__0_1.distcp"))
    return w.at("run")


def _cut_common_of_old_checkpoint(w: World) -> str:
    """A checkpoint written before files.json existed, its common.pt cut: the reader's error."""
    newest = _newest_iter(w)
    os.remove(os.path.join(newest, "files.json"))
    truncate(os.path.join(newest, "common.pt"))
    return newest


def _hf_cut(w: World) -> str:
    hf = w.copy(w.hf, "hf")
    truncate(os.path.join(hf, "model.safetensors"), 0.3)
    return hf


def _hf_missing_shard(w: World) -> str:
    hf = w.copy(w.hf, "hf")
    os.rename(os.path.join(hf, "model.safetensors"), os.path.join(hf, "model-00001-of-00002.safetensors"))
    index = {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "model-00002-of-00002.safetensors",
                                             "model.norm.weight": "model-00001-of-00002.safetensors"}}
    with open(os.path.join(hf, "model.safetensors.index.json"), "w", encoding="utf-8") as f:
        json.dump(index, f)
    return hf


def _unsafe_study(w: World) -> str:
    text = open(os.path.join(REPO, "examples", "study_demo.yaml"), encoding="utf-8").read()
    assert '"global-{variant}"' in text
    return w.file("study.yaml", text.replace('"global-{variant}"', '"../global-{variant}"'))


ROWS = [
    # -- 1. outputs that would clobber or destroy an input
    Row("to-hf into a non-empty folder",
        lambda w: ["convert", "to-hf", "--load", w.save, "--output", os.path.dirname(w.file("out/mine.txt"))],
        lambda w: "exists and is not empty"),
    Row("to-hf into the checkpoint's own folder",
        lambda w: ["convert", "to-hf", "--load", w.save, "--output", w.save],
        lambda w: f"--output {w.save} overlaps the input"),
    Row("to-hf of an iter_ folder into its --save folder",
        lambda w: ["convert", "to-hf", "--load", os.path.join(w.save, "iter_0000006"), "--output", w.save],
        lambda w: "overlaps the input"),
    Row("to-hf onto an existing file",
        lambda w: ["convert", "to-hf", "--load", w.save, "--output", w.file("model.txt")],
        lambda w: "is an existing file, not a folder"),
    Row("merge into a non-empty folder",
        lambda w: ["finetune", "merge", "--adapter", w.adapter, "--output", os.path.dirname(w.file("m/keep.txt"))],
        lambda w: "exists and is not empty"),
    Row("merge into the adapter's folder",
        lambda w: ["finetune", "merge", "--adapter", w.adapter, "--output", w.adapter],
        lambda w: "overlaps the input"),
    Row("from-hf into a non-empty folder",
        lambda w: ["convert", "from-hf", "--hf", w.hf, "--save", os.path.dirname(w.file("ck/keep.txt"))],
        lambda w: "exists and is not empty"),
    Row("from-hf into its own --hf folder",
        lambda w: ["convert", "from-hf", "--hf", w.hf, "--save", os.path.join(w.hf, "ckpt")],
        lambda w: "overlaps the input"),
    # -- outputs that cannot be created: refused before the work starts
    Row("preprocess prefix ending in /",
        lambda w: _preprocess(w, w.at("out") + "/"), lambda w: "a prefix names files"),
    Row("preprocess prefix under a file",
        lambda w: _preprocess(w, os.path.join(w.file("f"), "data")), lambda w: "is a file, not a folder"),
    Row("preprocess into a read-only folder",
        lambda w: _preprocess(w, w.at("disk", "data")), lambda w: "is not writable",
        disk="64k", read_only=True),
    Row("merge prefix ending in /",
        lambda w: ["merge", "--input", w.manifest, "--output-prefix", w.at("m") + "/"],
        lambda w: "a prefix names files"),
    Row("train-tokenizer prefix under a file",
        lambda w: ["train-tokenizer", "--input", w.jsonl, "--output-prefix", os.path.join(w.file("f"), "sp")],
        lambda w: "is a file, not a folder"),
    Row("train --save under a file",
        lambda w: _train(w, "--save", os.path.join(w.file("f"), "run")),
        lambda w: "is a file, not a folder"),
    Row("perplexity --output under a file",
        lambda w: ["evaluate", "perplexity", "--load", w.save, "--data-manifest", w.manifest,
                   "--output", os.path.join(w.file("f"), "r.json")],
        lambda w: "is a file, not a folder"),
    Row("perplexity --output onto its own manifest",
        lambda w: ["evaluate", "perplexity", "--load", w.save, "--data-manifest", _data_copy(w),
                   "--output", w.at("data", os.path.basename(w.manifest))],
        lambda w: "overlaps the input"),
    Row("mcq --output is a folder",
        lambda w: ["evaluate", "mcq", "--model", w.hf, "--benchmark", w.jsonl, "--output", w.case],
        lambda w: "is a folder; give a file name"),
    Row("make-data --output is a folder",
        lambda w: ["finetune", "make-data", "--output", w.case], lambda w: "is a folder"),
    # -- 2. full disks: one line with the space needed, temporaries removed
    Row("to-hf onto a full disk",
        lambda w: ["convert", "to-hf", "--load", w.save, "--output", w.at("disk", "hf")],
        lambda w: "disk full while writing it (it needs about", disk="256k"),
    Row("from-hf onto a full disk",
        lambda w: ["convert", "from-hf", "--hf", w.hf, "--save", w.at("disk", "ck")],
        lambda w: "disk full", disk="256k"),
    Row("preprocess onto a full disk",
        lambda w: _preprocess(w, w.at("disk", "data")), lambda w: "disk full", disk="16k"),
    # -- corrupted inputs: one line naming the file and what is wrong
    Row("manifest valid JSON but not an object",
        lambda w: _train(w, manifest=_damaged_manifest(w, b"[1, 2]")),
        lambda w: "a manifest is a JSON object, found a list"),
    Row("manifest not UTF-8",
        lambda w: _train(w, manifest=_damaged_manifest(w, b'{"format_version": "\xff\xfe"}')),
        lambda w: "not UTF-8"),
    Row("train on a truncated .bin",
        lambda w: _train(w, manifest=_cut_shard(w)),
        lambda w: "corpus_full_Africa.bin is"),
    Row("inspect a truncated .bin",
        lambda w: ["inspect", _cut_shard(w) and w.at("data", "corpus_full_Africa")],
        lambda w: "the manifest says"),
    Row("to-hf of a cut tensor file",
        lambda w: ["convert", "to-hf", "--load", _cut_checkpoint(w), "--output", w.at("hf")],
        lambda w: "__0_0.distcp is"),
    Row("to-hf of a deleted tensor file",
        lambda w: ["convert", "to-hf", "--load", _delete_tensor_file(w), "--output", w.at("hf")],
        lambda w: "__0_1.distcp is missing"),
    Row("to-hf of an old checkpoint with a cut common.pt",
        lambda w: ["convert", "to-hf", "--load", _cut_common_of_old_checkpoint(w), "--output", w.at("hf")],
        lambda w: "cannot read the checkpoint"),
    Row("train resuming from a cut newest checkpoint",
        lambda w: _train(w, "--load", _cut_checkpoint(w)),
        lambda w: "the newest complete earlier checkpoint is"),
    Row("from-hf of a cut safetensors file",
        lambda w: ["convert", "from-hf", "--hf", _hf_cut(w), "--save", w.at("ck")],
        lambda w: "model.safetensors: safetensors file unreadable"),
    Row("from-hf of a missing safetensors shard",
        lambda w: ["convert", "from-hf", "--hf", _hf_missing_shard(w), "--save", w.at("ck")],
        lambda w: "model-00002-of-00002.safetensors: safetensors file missing"),
    # -- 3. values that must be refused
    Row("train --lr inf", lambda w: _train(w, "--lr", "inf"), lambda w: "--lr: 'inf' is not a finite"),
    Row("train --lr nan", lambda w: _train(w, "--lr", "nan"), lambda w: "--lr: 'nan' is not a finite"),
    Row("finetune --lr inf",
        lambda w: ["finetune", "--model", w.hf, "--data", w.jsonl, "--output", w.at("ft"), "--lr", "inf"],
        lambda w: "--lr inf: not a finite number"),
    Row("mcq negative temperature",
        lambda w: ["evaluate", "mcq", "--model", w.hf, "--benchmark", w.jsonl, "--scoring", "generate",
                   "--temperature", "-1", "--output", w.at("r.json")],
        lambda w: "--temperature -1.0"),
    Row("generate infinite temperature",
        lambda w: ["generate", "--model", w.hf, "--prompt", "x", "--temperature", "inf"],
        lambda w: "--temperature must be > 0"),
    Row("study run name escaping its folder",
        lambda w: ["study", "plan", _unsafe_study(w), "--output-dir", w.at("study")],
        lambda w: "'../global-full' is not a safe file name"),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_hostile_input(row: Row, world: World, tmp_path, capsys):
    world = dataclasses.replace(world, case=str(tmp_path / "case"))
    os.makedirs(world.case)
    with contextlib_disk(row, world):
        argv = row.argv(world)  # builds the row's damaged inputs
        before, before_base = snapshot(world.case), snapshot(world.base)
        capsys.readouterr()
        try:
            code = cli_main(argv)
        except SystemExit as e:  # argparse
            code = e.code
        err = capsys.readouterr().err
        after = snapshot(world.case)
    assert code == 2, err
    assert "Traceback" not in err, err
    errors = [line for line in error_lines(err) if "error:" in line]
    assert len(errors) == 1, err
    assert row.expect(world) in errors[0], errors[0]
    assert after == before, "files were created, changed or deleted"
    assert snapshot(world.base) == before_base, "the shared inputs changed"


def contextlib_disk(row: Row, world: World):
    import contextlib

    if row.disk is None:
        return contextlib.nullcontext()
    return small_disk(world.at("disk"), row.disk, read_only=row.read_only)
