"""The study engine without Slurm: the paper's graph, validation, dry-run, the local executor."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from megatron_meta.errors import ConfigError
from megatron_meta.study.graph import build_graph
from megatron_meta.study.spec import load_study
from study_support import paper_study_with_inputs
from training_support import REPO, write_corpus

PAPER = os.path.join(REPO, "examples", "study_paper.yaml")


def test_the_paper_study_has_its_31_models_and_their_stages():
    study = load_study(PAPER)
    nodes = {n.name: n for n in build_graph(study)}
    trains = [n for n in nodes.values() if n.kind == "train"]
    assert len(trains) == 31
    names = {n.run.name for n in trains}
    assert len([x for x in names if x.startswith("local-")]) == 16
    assert len([x for x in names if x.startswith("global-")]) == 4
    assert len([x for x in names if x.startswith("loo-")]) == 8
    assert len([x for x in names if x.startswith("ablation-")]) == 3
    loo = nodes["train/loo-Asia-full-1b"].args
    assert loo[loo.index("--exclude-regions") + 1] == "Asia" and "paper-1b" in loo
    local = nodes["train/local-Africa-none-paper-0.5b"].args
    assert local[local.index("--exclude-regions") + 1] == "America,Asia,Europe"
    assert nodes["convert/global-full-paper-1b"].deps == ["train/global-full-paper-1b"]
    assert nodes["finetune/global-full-paper-1b"].deps == ["convert/global-full-paper-1b"]
    assert nodes["merge/global-full-paper-1b"].deps == ["finetune/global-full-paper-1b"]
    assert nodes["mcq/global-full-paper-1b"].deps == ["merge/global-full-paper-1b"]
    assert "--model" in nodes["mcq/global-full-paper-1b"].args and nodes["mcq/global-full-paper-1b"].args[
        nodes["mcq/global-full-paper-1b"].args.index("--model") + 1].endswith("merged")
    assert "finetune/local-Africa-full-paper-1b" not in nodes  # only: global 1B models
    # every train, perplexity and mcq, and the paper grid's instruct baseline (mcq-baseline)
    assert len(nodes["report"].deps) == 31 + 31 + 2 + 1


def test_study_errors_name_the_file_and_the_fix(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("data: {manifest: m.json}\nregions: [Asia]\nruns: [{name: a, exclude: Mars}]\n")
    with pytest.raises(ConfigError, match="exclude 'Mars' is not in regions"):
        load_study(str(bad))
    bad.write_text("data: {manifest: m.json}\nruns: [{name: a}]\nstages: {evaluate-all: {}}\n")
    with pytest.raises(ConfigError, match="unknown stage"):
        load_study(str(bad))


def test_dry_run_prints_arrays_and_afterok_edges_and_submits_nothing(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "megatron_meta.cli",
            "study",
            "submit",
            paper_study_with_inputs(tmp_path),
            "--dry-run",
            "--output-dir",
            str(tmp_path / "out"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("$ sbatch") > 31 and "--array=0-15" in out.stdout
    assert "--dependency=afterok:<train@0>_0" in out.stdout
    assert not os.path.exists(tmp_path / "out")  # a dry run writes nothing at all


@pytest.mark.distributed
def test_local_executor_runs_then_skips_what_is_done(tmp_path):
    manifest = write_corpus(str(tmp_path / "corpus"))
    spec = tmp_path / "study.yaml"
    spec.write_text(f"""
name: t
output_dir: {tmp_path / 'out'}
regions: [Africa, Asia, Europe]
data: {{manifest: {manifest}}}
defaults:
  train: {{model: tiny, seq-length: 32, micro-batch-size: 2, global-batch-size: 8,
          train-iters: 4, log-interval: 1, eval-iters: 1, num-workers: 0}}
runs:
  - {{name: "loo-{{exclude}}", exclude: [Asia]}}
stages: {{report: {{}}}}
""")
    cmd = [sys.executable, "-m", "megatron_meta.cli", "study", "run", str(spec)]
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    report = open(tmp_path / "out" / "report" / "study.md").read()
    assert "| loo-Asia | all but Asia | full | tiny | finished | 4 |" in report
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert "done (already)" in again.stdout and "torch.distributed.run" not in again.stdout


def test_a_report_older_than_a_result_is_not_done(tmp_path):
    from megatron_meta.study.kinds import KINDS

    report = tmp_path / "report" / "study.md"
    result = tmp_path / "eval" / "perplexity" / "a.json"
    for path in (result, report):
        path.parent.mkdir(parents=True)
        path.write_text("{}")
    done = KINDS["report"].done
    os.utime(result, (1000, 1000))
    assert done(str(report))
    os.utime(result, (4e9, 4e9))  # a result written after the report
    assert not done(str(report))
