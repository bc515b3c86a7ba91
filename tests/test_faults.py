"""Faults survived, not only reported: a killed launcher, a disk that fills during a checkpoint
save, a damaged newest checkpoint; and the data-loss cases of outputs that used to clobber."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from hostile_support import small_disk, snapshot, truncate
from training_support import REPO, free_port, read_metrics, run_cli, tiny_args, write_corpus

from megatron_meta.checkpoints.layout import damage, latest_checkpoint
from megatron_meta.cli import main as cli_main

ENV = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("data")), docs_per_region=24)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, manifest):
    """A --save folder with complete checkpoints at iterations 3 and 6."""
    save = str(tmp_path_factory.mktemp("trained") / "run")
    done = run_cli(tiny_args(manifest, **{"--save": save, "--save-interval": 3}))
    assert done.returncode == 0, done.stderr[-2000:]
    return save


def _children(pid: int):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.distributed
@pytest.mark.slow
def test_ranks_exit_when_their_torchrun_is_killed(tmp_path, manifest):
    save = str(tmp_path / "run")
    args = tiny_args(manifest, **{"--save": save, "--train-iters": 100000, "--eval-interval": 100000,
                                  "--lr-decay-iters": 100000})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(free_port()), "-m", "megatron_meta.cli", "train", *args]
    agent = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    ranks = []
    try:
        deadline = time.time() + 180
        while time.time() < deadline:  # until both ranks train
            if os.path.exists(os.path.join(save, "metrics.jsonl")) and read_metrics(save):
                break
            assert agent.poll() is None, agent.stdout.read()[-3000:]
            time.sleep(0.5)
        else:
            pytest.fail("training did not start")
        ranks = _children(agent.pid)
        assert len(ranks) == 2
        os.kill(agent.pid, signal.SIGKILL)  # the agent alone
        agent.wait()
        killed = time.time()
        while any(_alive(r) for r in ranks) and time.time() - killed < 30:
            time.sleep(0.2)
        took = time.time() - killed
        assert not any(_alive(r) for r in ranks), "ranks kept running without their launcher"
        output = agent.stdout.read()
    finally:
        for r in ranks:  # only on failure: the ranks this test started
            if _alive(r):
                os.kill(r, signal.SIGKILL)
    assert took < 15
    # Each rank ends with one line: its launcher died, or (the slower one) its peer went first.
    assert "its launcher (torchrun, pid" in output, output[-3000:]
    ended = output.count("its launcher (torchrun, pid") + output.count("lost its connection")
    assert ended == 2 and "Traceback" not in output, output[-3000:]


@pytest.mark.distributed
def test_launch_ends_with_the_failed_ranks_message(tmp_path, manifest):
    cmd = [sys.executable, "-m", "megatron_meta.launch", "--nproc-per-node", "2", "--master-port",
           str(free_port()), "-m", "megatron_meta.cli", "train",
           *tiny_args(manifest, **{"--lr": "inf"})]
    result = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("megatron-meta launch: error: megatron-meta train: --lr: 'inf'"), last
    assert "each rank's output is above" in last
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr


@pytest.mark.slow
def test_a_save_that_fills_the_disk_stops_cleanly(tmp_path, manifest):
    # 7.7 MB a checkpoint: the first save fits on 12 MB, the second does not.
    disk = str(tmp_path / "disk")
    with small_disk(disk, "12m"):
        save = os.path.join(disk, "run")
        result = run_cli(tiny_args(manifest, **{"--save": save, "--save-interval": 3}))
        left = sorted(os.listdir(save))
        complete = latest_checkpoint(save)
        whole = damage(complete)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("megatron-meta")]
    assert len(errors) == 1 and "disk full while writing it" in errors[0], result.stderr[-3000:]
    assert "iter_0000006.tmp was removed" in errors[0] and "Traceback" not in result.stderr
    assert "iter_0000006.tmp" not in left and "iter_0000006" not in left
    assert complete.endswith("iter_0000003") and whole is None


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_is_named_and_fallback_resumes(tmp_path, trained, manifest):
    import shutil

    save = str(tmp_path / "run")
    shutil.copytree(trained, save)
    truncate(os.path.join(save, "iter_0000006", "__0_1.distcp"))
    args = tiny_args(manifest, **{"--save": save, "--train-iters": 8})
    refused = run_cli(args)
    assert refused.returncode == 2
    line = [x for x in refused.stderr.splitlines() if x.startswith("megatron-meta")][-1]
    assert "__0_1.distcp is" in line and "iter_0000003" in line and "--load-fallback" in line
    resumed = run_cli(args + ["--load-fallback"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "--load-fallback: resuming from" in resumed.stderr
    assert "loaded checkpoint" in resumed.stderr and "iteration 3)" in resumed.stderr
    assert latest_checkpoint(save).endswith("iter_0000008")


# -- section 1 of the issue: outputs that used to clobber


def _to_hf(*argv):
    return cli_main(["convert", "to-hf", *argv])


def test_to_hf_never_destroys_the_checkpoint_or_other_files(tmp_path, trained, capsys):
    before = snapshot(trained)
    assert _to_hf("--load", trained, "--output", trained) == 2  # into its own folder
    assert _to_hf("--load", trained, "--output", os.path.join(trained, "hf")) == 2  # inside it
    assert snapshot(trained) == before
    out = tmp_path / "hf"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert _to_hf("--load", trained, "--output", str(out)) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["notes.txt"]
    # --overwrite replaces only what to-hf writes: the user's file and nothing else stays
    (out / "model-00001-of-00009.safetensors").write_text("stale shard of an earlier export")
    assert _to_hf("--load", trained, "--output", str(out), "--overwrite") == 0
    names = sorted(os.listdir(out))
    assert "notes.txt" in names and "model.safetensors" in names and "config.json" in names
    assert "model-00001-of-00009.safetensors" not in names
    assert (out / "notes.txt").read_text() == "mine"
    assert not [n for n in os.listdir(tmp_path) if ".tmp" in n]  # no temporary left, no *.old
    single = tmp_path / "file"
    single.write_text("a file, not a folder")
    assert _to_hf("--load", trained, "--output", str(single)) == 2
    assert single.read_text() == "a file, not a folder"
    assert sorted(os.listdir(tmp_path)) == ["file", "hf"]


def test_merge_refuses_a_non_empty_output(tmp_path, capsys):
    import json

    base = tmp_path / "base"
    base.mkdir()
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert cli_main(["finetune", "merge", "--adapter", str(adapter), "--output", str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert os.listdir(out) == ["keep.txt"]


def test_a_half_switched_output_set_is_refused(tmp_path):
    """Rerunning preprocess over an output set: if the switch from the old set to the new one is
    cut short (a new .bin beside an old .idx, under the old manifest), readers refuse it naming
    the file; a completed rerun reads back whole."""
    from preprocess_fixtures import make_documents, training_texts, write_jsonl

    from megatron_meta.errors import DataError
    from megatron_meta.manifest import load_manifest
    from megatron_meta.tokenizer.train import train_sentencepiece

    docs = make_documents(24)
    tok = train_sentencepiece(training_texts(docs), str(tmp_path / "sp"), 500, num_threads=1)
    old_in = write_jsonl(str(tmp_path / "old.jsonl"), docs)
    new_in = write_jsonl(str(tmp_path / "new.jsonl"), docs[:12])

    def preprocess(corpus, prefix):
        assert cli_main(["preprocess", "--input", corpus, "--output-prefix", prefix,
                         "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", tok,
                         "--no-progress"]) == 0
        return load_manifest(prefix + ".manifest.json")

    old = preprocess(old_in, str(tmp_path / "out" / "set"))
    new = preprocess(new_in, str(tmp_path / "other" / "set"))
    shard = old.shards[0]
    assert set(shard.files) == {"bin", "idx", "metadata_tokens"}
    os.replace(new.shards[0].prefix + ".bin", shard.prefix + ".bin")  # the cut-short switch
    with pytest.raises(DataError, match=r"set_.*\.bin is \d+ bytes, the manifest says"):
        load_manifest(old.path)
    again = preprocess(new_in, str(tmp_path / "out" / "set"))  # a completed rerun
    assert again.shards[0].documents == new.shards[0].documents
