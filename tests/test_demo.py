"""The end-to-end demo: stage skipping and resuming, console filtering (megatron_meta.stages), and
a whole run on a small local corpus (no network) through the real CLIs, torchrun included."""

import json
import os
import subprocess
import sys

import pytest

from megatron_meta.demo import build_parser
from megatron_meta.stages import OutputFilter, Stages, run_command
from megatron_meta.errors import MegatronMetaError

from preprocess_fixtures import make_documents, write_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _touch(path, text="x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_a_stage_is_skipped_only_when_its_outputs_and_settings_are_unchanged(tmp_path, capsys):
    state = str(tmp_path / ".stages")
    out = str(tmp_path / "a" / "out.txt")
    runs = []

    def action():
        runs.append(1)
        _touch(out, str(len(runs)))

    Stages(state, 1).run("a", "first", [out], {"n": 1, "files": ["x"]}, action)
    Stages(state, 1).run("a", "same settings", [out], {"n": 1, "files": ["x"]}, action)
    assert len(runs) == 1 and "skipped: outputs complete" in capsys.readouterr().out
    Stages(state, 1).run("a", "other settings", [out], {"n": 2, "files": ["x"]}, action)
    assert len(runs) == 2
    os.remove(out)
    Stages(state, 1).run("a", "output gone", [out], {"n": 2, "files": ["x"]}, action)
    assert len(runs) == 3
    Stages(state, 1, force=True).run("a", "forced", [out], {"n": 2, "files": ["x"]}, action)
    assert len(runs) == 4


def test_a_stage_that_fails_or_writes_nothing_is_not_marked_done(tmp_path):
    state = str(tmp_path / ".stages")
    out = str(tmp_path / "never.txt")
    with pytest.raises(MegatronMetaError, match="did not write"):
        Stages(state, 1).run("b", "lazy", [out], {}, lambda: None)
    assert not os.path.exists(tmp_path / ".stages" / "b.json")


def test_console_filter_hides_library_noise_but_keeps_progress_and_errors():
    keep = OutputFilter()
    shown = [line for line in [
        "21:44:32 INFO megatron.core.datasets.gpt_dataset: Load the document index\n",
        "/x/y.py:24: UserWarning: Apex is not installed.\n",
        "  warnings.warn(\n",
        "Params for bucket 1 (10 elements):\n",
        "\tdecoder.layers.0.mlp.linear_fc1.weight\n",
        "21:41:37 WARNING megatron_meta.corpora.bad_records: skipping record: f.csv:23: empty\n",
        "21:45:53 INFO megatron_meta.training.metrics: iteration 100/400 | tokens/s 8,940\n",
        "Traceback (most recent call last):\n",
        "  File \"x.py\", line 3, in <module>\n",
        "megatron-meta train: error: --data-manifest is required\n",
    ] if keep.show(line)]
    assert shown == [
        "21:45:53 INFO megatron_meta.training.metrics: iteration 100/400 | tokens/s 8,940\n",
        "Traceback (most recent call last):\n",
        "  File \"x.py\", line 3, in <module>\n",
        "megatron-meta train: error: --data-manifest is required\n",
    ]
    assert OutputFilter(verbose=True).show("/x/y.py:24: UserWarning: w\n")


def test_a_failing_command_names_its_log_and_shows_its_last_lines(tmp_path, capsys):
    log = str(tmp_path / "logs" / "boom.log")
    cmd = [sys.executable, "-c", "import sys; print('working'); sys.exit('boom: bad flag')"]
    with pytest.raises(MegatronMetaError, match="exit code 1.*boom.log"):
        run_command(cmd, log_path=log)
    assert "boom: bad flag" in capsys.readouterr().out
    assert "boom: bad flag" in open(log).read()


def test_flags_fill_the_config():
    args = build_parser().parse_args(["--train-iters", "7", "--input", "a.jsonl", "--nproc", "1"])
    assert (args.train_iters, args.input, args.nproc, args.vocab_size) == (7, ["a.jsonl"], 1, 4096)


@pytest.mark.slow
@pytest.mark.distributed
def test_demo_end_to_end_on_a_local_corpus_then_resumes_by_skipping(tmp_path):
    corpus = write_jsonl(str(tmp_path / "news.jsonl"), make_documents(n=96, seed=5))
    out = str(tmp_path / "demo")
    cmd = [
        sys.executable, "-m", "megatron_meta.cli", "demo", "--output-dir", out,
        "--input", corpus, "--vocab-size", "400", "--holdout-test", "3",
        "--train-iters", "4", "--seq-length", "128", "--micro-batch-size", "2",
        "--global-batch-size", "4", "--nproc", "2",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    log = first.stdout
    assert "tokens/s" in log  # the training log line streams through
    assert "torch.distributed.run" in log and "--nproc-per-node 2" in log
    assert "UserWarning" not in log  # library noise stays in the logs folder

    regions = ["Africa", "America", "Asia", "Europe"]
    rows = []
    for variant in ("full", "none"):
        with open(os.path.join(out, "eval", f"{variant}.json")) as f:
            rows += json.load(f)["results"]
    assert sorted((r["model"], r["variant"], r["region"]) for r in rows) == sorted(
        (f"trained-{m}", v, g) for m in ("full", "none") for v in ("full", "none") for g in regions)
    for r in rows:
        assert r["documents"] == 3 and r["tokens"] > 0
        assert r["ci_low"] <= r["ppl"] <= r["ci_high"]
    table = open(os.path.join(out, "report", "perplexity.md")).read()
    for region in regions:
        assert f"| {region}" in table and f"| {region}" in log
    with open(os.path.join(out, "report", "perplexity.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(os.path.join(out, "logs", "train-full.log")) > 0

    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert again.stdout.count("skipped: outputs complete") == 6  # every stage but corpus/report
    assert "torch.distributed.run" not in again.stdout
