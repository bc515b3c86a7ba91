"""Every command in README.md is checked against the code, so the docs cannot drift from it.

Each ``megatron-meta`` command of a ```bash block (and the training flags of ``torchrun
tools/pretrain.py`` and ``sbatch slurm/*.sbatch ... -- FLAGS``) is parsed by that command's own
parser: an unknown or misspelt flag, a missing required one or a bad choice fails here. The
commands that need nothing but the embedded news corpus run as written, in a scratch folder:
the data pipeline of section 1, the instruction and MCQ sets, the harness task, the demo's plan.
Not run here: ``make demo`` / ``make test`` (they are the suite and its demo), commands on data a
user brings (NOW, the paper's benchmark, released models on a cluster), ``lm_eval``, ``python -c``.
"""

import importlib
import os
import re
import shlex
import subprocess
import sys

import pytest

from training_support import REPO

README = os.path.join(REPO, "README.md")
# Commands whose flags are the training parser's.
TRAIN_LAUNCHERS = ("torchrun", "sbatch")


def readme_commands():
    """Shell commands of the README's bash blocks: continuations joined, comments dropped."""
    text = open(README, encoding="utf-8").read()
    commands, pending = [], ""
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            pending += line[:-1] + " " if line.endswith("\\") else line + "\n"
            if line.endswith("\\"):
                continue
            try:
                words = shlex.split(pending, comments=True)
            except ValueError:  # an open quote: a multi-line argument (python -c "...")
                continue
            if words:
                commands.append(words)
            pending = ""
    return commands


def parser_and_args(words):
    """(argparse parser, arguments) of a README command, or None when it has no parser of ours."""
    from megatron_meta.cli import SUBCOMMANDS
    from megatron_meta.study.preflight import command_parser

    words = [w for w in words if w not in ("[", "]")]
    words = [w.strip("[]") for w in words]  # [--dtype bfloat16]: an optional flag
    words = [w.replace("$SLURM_ARRAY_TASK_ID", "0") for w in words]  # as inside an array task
    while words and re.match(r"^[A-Z_]+=", words[0]):
        words = words[1:]  # VAR=value prefixes
    if words[0] in TRAIN_LAUNCHERS:
        if "--" in words:
            return command_parser(["train"] + words[words.index("--") + 1:])
        script = next(i for i, w in enumerate(words) if w.endswith("pretrain.py"))
        return command_parser(["train"] + words[script + 1:])
    if words[0] != "megatron-meta":
        return None
    name = words[1]
    if name in ("train", "preprocess", "train-tokenizer", "convert", "evaluate", "study", "finetune"):
        return command_parser(words[1:])
    module = importlib.import_module(SUBCOMMANDS[name][0])
    if not hasattr(module, "build_parser"):
        return None
    return module.build_parser(), words[2:]


def test_the_readme_has_its_commands():
    commands = readme_commands()
    assert len(commands) > 30
    assert ["megatron-meta", "fetch", "news-articles"] in commands


@pytest.mark.parametrize("words", readme_commands(), ids=lambda w: " ".join(w[:4])[:60])
def test_every_readme_command_is_known_to_its_parser(words):
    from megatron_meta.study.preflight import parser_problems

    found = parser_and_args(words)
    if found is None:
        assert words[0] in ("make", "python", "lm_eval", "HF_DATASETS_OFFLINE=1", "bash") or \
            words[:2] == ["megatron-meta", "generate"], words
        return
    parser, args = found
    problems = parser_problems(parser, args, words[1] if words[0] == "megatron-meta" else "train")
    assert problems == [], f"{shlex.join(words)}: {problems}"


RUN_AS_WRITTEN = (
    "megatron-meta fetch news-articles",
    "megatron-meta train-tokenizer --input news-articles",
    "megatron-meta preprocess --input news-articles",
    "megatron-meta inspect data/news_full_europe_text_document",
    "megatron-meta evaluate make-mcq",
    "megatron-meta evaluate lm-eval-task --benchmark data/mcq_news.jsonl",
    "megatron-meta finetune make-data",
)


def test_the_corpus_commands_run_as_written(tmp_path):
    """Section 1's pipeline and the MCQ/instruction sets, in order, in a scratch folder."""
    chosen = [w for w in readme_commands() if any(shlex.join(w).startswith(p) for p in RUN_AS_WRITTEN)]
    assert len(chosen) == len(RUN_AS_WRITTEN), [shlex.join(w) for w in chosen]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2")
    for words in chosen:
        cmd = [sys.executable, "-m", "megatron_meta.cli", *words[1:]]
        out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"{shlex.join(words)}\n{out.stdout[-2000:]}{out.stderr[-2000:]}"
    assert (tmp_path / "data" / "news.manifest.json").is_file()
    assert sum(1 for _ in open(tmp_path / "data" / "mcq_news.jsonl")) > 100
    assert (tmp_path / "runs" / "mcq" / "tasks").is_dir()


def test_the_demo_plan_runs_as_written():
    words = next(w for w in readme_commands() if w[:3] == ["megatron-meta", "study", "plan"]
                 and w[3] == "examples/study_demo.yaml")
    out = subprocess.run([sys.executable, "-m", "megatron_meta.cli", *words[1:]], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MCQ benchmark:" in out.stdout and "train/global-full" in out.stdout
