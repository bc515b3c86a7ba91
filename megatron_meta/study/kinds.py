"""Stage kinds: each turns a node of the study into its ``megatron-meta`` command.

Adding a stage is one entry of :data:`KINDS`: its scope (once for the data, once per run, or
once for the study), how it is launched (``torchrun`` on the job's nodes, or one ``python``
process), what it waits for, its command and the output whose existence means it is done.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from megatron_meta.cluster import run_state
from megatron_meta.study.runs import Run, Study

Flags = Dict[str, Any]


def flag_args(flags: Flags, skip: Tuple[str, ...] = ("only", "slurm")) -> List[str]:
    """``{'train-iters': 5, 'metadata-wrap': True}`` -> ``['--train-iters', '5', '--metadata-wrap']``."""
    out: List[str] = []
    for key, value in flags.items():
        if key in skip or value is None or value is False:
            continue
        out.append(f"--{key}")
        if value is not True:
            out.extend(str(v) for v in value) if isinstance(value, list) else out.append(str(value))
    return out


def with_protocol(study: Study, flags: Flags) -> Flags:
    """``flags`` plus ``protocol: paper`` under a paper-protocol study (a stage's own wins)."""
    return {"protocol": "paper", **flags} if study.protocol == "paper" else flags


def manifest_path(study: Study) -> str:
    if study.data.get("manifest"):
        return os.path.abspath(study.data["manifest"])
    return study.path_in("data", "corpus.manifest.json")


def run_dir(study: Study, run: Run) -> str:
    return study.path_in("runs", run.name)


def hf_dir(study: Study, run: Run) -> str:
    return study.path_in("hf", run.name)


def sft_dir(study: Study, run: Run) -> str:
    return study.path_in("sft", run.name)


def _tokenizer(study: Study, run: Optional[Run], flags: Flags) -> Tuple[List[str], str]:
    prefix = study.path_in("data", "tokenizer")
    return ["train-tokenizer", *flag_args(flags), "--output-prefix", prefix], prefix + ".model"


def _preprocess(study: Study, run: Optional[Run], flags: Flags) -> Tuple[List[str], str]:
    manifest = manifest_path(study)
    extra = []
    if "tokenizer" in study.data and "tokenizer-model" not in flags:
        extra = ["--tokenizer-model", study.path_in("data", "tokenizer.model")]
    prefix = manifest[: -len(".manifest.json")]
    flags = with_protocol(study, flags)
    return ["preprocess", *flag_args(flags), *extra, "--output-prefix", prefix], manifest


def _train(study: Study, run: Optional[Run], flags: Flags) -> Tuple[List[str], str]:
    assert run is not None
    train = dict(run.train)
    if run.variant:
        train["variant"] = run.variant
    if run.model:
        train["model"] = run.model
    if run.region:
        train["exclude-regions"] = ",".join(r for r in study.regions if r != run.region)
    if run.exclude:
        train["exclude-regions"] = run.exclude
    if study.protocol == "paper":  # the authors' mix and weight decay (FACTS 1a)
        train = {"region-mix": "interleave", "weight-decay-all": True, **train}
    if train.get("config"):  # jobs may start elsewhere (sbatch --chdir): name the recipe fully
        train["config"] = os.path.abspath(str(train["config"]))
    save = run_dir(study, run)
    args = ["train", *flag_args(train), "--data-manifest", manifest_path(study), "--save", save]
    return args, save


def _convert(study: Study, run: Optional[Run], flags: Flags) -> Tuple[List[str], str]:
    out = hf_dir(study, run)
    return [
        "convert",
        "to-hf",
        "--load",
        run_dir(study, run),
        "--output",
        out,
        *flag_args(flags),
    ], os.path.join(out, "config.json")


def instructions_path(study: Study) -> str:
    return study.path_in("data", "instructions.jsonl")


def _instructions(study: Study, run: Optional[Run], flags: Flags) -> Tuple[List[str], str]:
    out = instructions_path(study)
    return ["finetune", "make-data", *flag_args(flags), "--output", out], out


def _finetune(study: Study, run: Optional[Run], flags: Flags) -> Tuple[List[str], str]:
    out = sft_dir(study, run)
    if "data" not in flags and "instructions" in study.data:
        flags = {**flags, "data": instructions_path(study)}
    if study.protocol == "paper":  # the metadata model's prompts carry metadata, the other's not
        flags = {**flags, "metadata-wrap": (run.variant or run.train.get("variant")) != "none"}
    flags = with_protocol(study, flags)
    args = ["finetune", "--model", hf_dir(study, run), *flag_args(flags), "--output", out]
    return args, os.path.join(out, "adapter", "adapter_config.json")


def merged_dir(study: Study, run: Run) -> str:
    return os.path.join(sft_dir(study, run), "merged")


def _merge(study: Study, run: Optional[Run], flags: Flags) -> Tuple[List[str], str]:
    out = merged_dir(study, run)
    adapter = os.path.join(sft_dir(study, run), "adapter")
    args = ["finetune", "merge", "--adapter", adapter, *flag_args(flags), "--output", out]
    return args, os.path.join(out, "config.json")


def _counterfactual(study: Study, run: Optional[Run], flags: Flags) -> Tuple[List[str], str]:
    out = study.path_in("eval", "counterfactual", f"{run.name}.json")
    args = ["evaluate", "counterfactual", "--model", hf_dir(study, run), "--data-manifest",
            manifest_path(study), *flag_args(flags), "--label", run.name, "--output", out]
    return args, out


def _perplexity(study: Study, run: Optional[Run], flags: Flags) -> Tuple[List[str], str]:
    out = study.path_in("eval", "perplexity", f"{run.name}.json")
    args = [
        "evaluate",
        "perplexity",
        "--load",
        run_dir(study, run),
        "--data-manifest",
        manifest_path(study),
        *flag_args(with_protocol(study, flags)),
        "--label",
        run.name,
        "--output",
        out,
    ]
    return args, out


BENCHMARK_ENV = "MEGATRON_META_BENCHMARK"
"""Environment variable naming the paper's benchmark file (overridden by ``stages.mcq.benchmark``)."""


def news_mcq_path(study: Study) -> str:
    return study.path_in("data", "mcq_news.jsonl")


def _news_mcq(study: Study, run: Optional[Run], flags: Flags) -> Tuple[List[str], str]:
    out = news_mcq_path(study)
    return ["evaluate", "make-mcq", "--data-manifest", manifest_path(study), *flag_args(flags),
            "--output", out], out


def mcq_benchmark(study: Study) -> Tuple[Optional[str], str]:
    """(benchmark file, where it comes from): the study key, then $MEGATRON_META_BENCHMARK,
    then the set the study builds from its held-out news (``data.benchmark``)."""
    given = study.stages.get("mcq", {}).get("benchmark")
    if given:
        return str(given), "stages.mcq.benchmark"
    if os.environ.get(BENCHMARK_ENV):
        return os.path.abspath(os.environ[BENCHMARK_ENV]), f"${BENCHMARK_ENV}"
    if "benchmark" in study.data:
        return news_mcq_path(study), "built from the held-out news (data.benchmark)"
    return None, "none given"


def _mcq(study: Study, run: Optional[Run], flags: Flags) -> Tuple[List[str], str]:
    out = study.path_in("eval", "mcq", f"{run.name}.json")
    tuned = "merge" in study.stages and _selected(study, "merge", run)
    model = merged_dir(study, run) if tuned else hf_dir(study, run)
    if study.protocol == "paper":
        # the paper's grid: a metadata model with metadata prompts only, a no-metadata one without
        setting = "without" if (run.variant or run.train.get("variant")) == "none" else "with"
        flags = {"scoring": "generate", "metadata": setting, **with_protocol(study, flags)}
    flags = {"scoring": "loglik", "metadata": "with,without", **flags}
    flags["benchmark"] = mcq_benchmark(study)[0]  # None: preflight says what to do
    args = ["evaluate", "mcq", "--model", model, *flag_args(flags), "--label", run.name,
            "--output", out]
    return args, out


def _mcq_baseline(study: Study, run: Optional[Run], flags: Flags) -> Tuple[List[str], str]:
    """The paper's baseline instruct model in both settings (``stages: mcq-baseline: {model}``)."""
    out = study.path_in("eval", "mcq", "baseline.json")
    flags = {"scoring": "generate", "metadata": "with,without", **with_protocol(study, flags)}
    flags["benchmark"] = flags.get("benchmark") or mcq_benchmark(study)[0]  # as the mcq stage's
    label = str(flags.pop("label", "baseline"))
    return ["evaluate", "mcq", *flag_args(flags), "--label", label, "--output", out], out


def _report(study: Study, run: Optional[Run], flags: Flags) -> Tuple[List[str], str]:
    return ["study", "report", study.path, "--output-dir", study.output_dir], study.path_in(
        "report", "study.md"
    )


def _train_done(output: str) -> bool:
    return run_state.is_finished(output)


def _report_done(output: str) -> bool:
    """Written after every result and run state it reads (else it is stale and runs again)."""
    import glob

    if not os.path.exists(output):
        return False
    root = os.path.dirname(os.path.dirname(output))
    inputs = glob.glob(os.path.join(root, "eval", "*", "*.json"))
    inputs += glob.glob(os.path.join(root, "runs", "*", run_state.FILENAME))
    newest = max((os.path.getmtime(p) for p in inputs), default=0.0)
    return os.path.getmtime(output) >= newest


@dataclass
class Kind:
    """How one stage kind becomes commands."""

    scope: str
    """``data`` (once, before the runs), ``run`` (once per run) or ``study`` (once, at the end)."""
    launcher: str
    """``torchrun`` (one per node, distributed) or ``python`` (one process)."""
    after: Tuple[str, ...]
    """Kinds it waits for: the same run's (scope run) or all of them (scope study)."""
    build: Callable[[Study, Optional[Run], Flags], Tuple[List[str], str]]
    """-> (``megatron-meta`` arguments, the output that exists once it is done)."""
    done: Callable[[str], bool] = os.path.exists
    """Whether the output says the stage is complete."""
    sbatch: str = "study_task.sbatch"
    """Script in slurm/ that runs it."""


KINDS: Dict[str, Kind] = {
    "tokenizer": Kind("data", "python", (), _tokenizer),
    "preprocess": Kind("data", "python", ("tokenizer",), _preprocess),
    "instructions": Kind("data", "python", (), _instructions),
    "benchmark": Kind("data", "python", ("preprocess",), _news_mcq),
    "train": Kind("run", "torchrun", ("preprocess",), _train, _train_done),
    "convert": Kind("run", "python", ("train",), _convert),
    "finetune": Kind("run", "python", ("convert", "instructions"), _finetune),
    "merge": Kind("run", "python", ("finetune",), _merge),
    "perplexity": Kind("run", "python", ("train",), _perplexity),
    "counterfactual": Kind("run", "python", ("convert",), _counterfactual),
    "mcq": Kind("run", "python", ("merge", "convert", "benchmark"), _mcq),
    "mcq-baseline": Kind("study", "python", ("benchmark",), _mcq_baseline),
    "report": Kind(
        "study", "python", ("train", "perplexity", "counterfactual", "mcq", "mcq-baseline"),
        _report, _report_done,
    ),
}


def _selected(study: Study, kind: str, run: Run) -> bool:
    import fnmatch

    only = study.stages.get(kind, {}).get("only")
    return only is None or any(fnmatch.fnmatch(run.name, p) for p in only)
