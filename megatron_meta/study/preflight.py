"""Check a whole study before its first stage starts (``study plan``, ``run``, ``submit``).

Every node's command line is parsed by that command's own parser (a flag a stage does not know
is found here, not after an hour of training); every input file or folder a node reads must
exist and be readable, unless another node of the study writes it; training settings are
checked as training would check them (tensor-parallel size against the model's heads, batch
sizes, variants against what preprocessing writes); the MCQ benchmark is read. All problems are
reported at once, each naming the study file, the stage and the key, and nothing runs.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
from typing import Dict, List, Optional, Sequence, Tuple

from megatron_meta.errors import ConfigError, MegatronMetaError
from megatron_meta.study.graph import Node
from megatron_meta.study.kinds import KINDS, mcq_benchmark
from megatron_meta.study.runs import Study

# Flags whose value is a file or folder the command reads.
INPUT_FLAGS = ("--data-manifest", "--config", "--input", "--tokenizer-model", "--benchmark",
               "--data", "--load", "--pretrained-checkpoint", "--adapter", "--continent-map",
               "--hf", "--model")
NOT_PATHS = {"--input": {"news-articles"}}


def command_parser(args: Sequence[str]):
    """(argparse parser, its arguments) of one ``megatron-meta`` command line."""
    name, rest = args[0], list(args[1:])
    if name == "finetune":
        from megatron_meta.finetune.cli import parser_for

        return parser_for(rest)
    module = {
        "train": "megatron_meta.training.config",
        "preprocess": "megatron_meta.preprocess.cli",
        "train-tokenizer": "megatron_meta.tokenizer.train",
        "convert": "megatron_meta.convert.cli",
        "evaluate": "megatron_meta.evaluation.cli",
        "study": "megatron_meta.study.cli",
    }.get(name)
    if module is None:
        raise ConfigError(f"unknown command megatron-meta {name}")
    return importlib.import_module(module).build_parser(), rest


def parse_problems(args: Sequence[str]) -> List[str]:
    """What the command's parser says about ``args`` (unknown flags, bad values); [] when fine."""
    parser, rest = command_parser(args)
    return parser_problems(parser, rest, args[0])


def parser_problems(parser, rest: Sequence[str], command: str) -> List[str]:
    """What ``parser`` says about ``rest``, as messages ([] when it accepts them)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            _, unknown = parser.parse_known_args(rest)
    except SystemExit:
        last = (err.getvalue().strip().splitlines() or ["invalid arguments"])[-1]
        return [last.split(": error: ", 1)[-1]]
    flags = [u for u in unknown if u.startswith("--")]
    if unknown and not flags:
        return [f"unexpected argument(s) {' '.join(unknown)}"]
    return [f"unknown flag {f.split('=')[0]} (key {f[2:].split('=')[0]!r}): "
            f"`megatron-meta {command} --help` lists the flags" for f in flags]


def _values(args: Sequence[str], flag: str) -> List[str]:
    out: List[str] = []
    for i, a in enumerate(args):
        if a == flag:
            for v in args[i + 1:]:
                if v.startswith("--"):
                    break
                out.append(v)
    return out


def _produced(path: str, outputs: Sequence[str]) -> bool:
    path = os.path.abspath(path)
    return any(o == path or o.startswith(path + os.sep) for o in outputs)


def input_problems(node: Node, outputs: Sequence[str]) -> List[str]:
    problems = []
    for flag in INPUT_FLAGS:
        if flag == "--model" and node.args[0] == "train":
            continue  # a preset name there
        for value in _values(node.args, flag):
            if value in NOT_PATHS.get(flag, ()) or _produced(value, outputs):
                continue
            if not os.path.exists(value):
                problems.append(f"{flag} {value}: not found (no stage of the study writes it); "
                                "fix the path (relative to the study file)")
            elif not os.access(value, os.R_OK):
                problems.append(f"{flag} {value}: not readable; check its permissions")
    return problems


def _planned_variants(study: Study) -> Optional[List[str]]:
    flags = study.data.get("preprocess") or {}
    if flags.get("metadata-variants"):
        return [v.strip() for v in str(flags["metadata-variants"]).split(",") if v.strip()]
    manifest = study.data.get("manifest")
    if manifest and os.path.isfile(manifest) and "preprocess" not in study.data:
        from megatron_meta.manifest import load_manifest

        try:
            return load_manifest(manifest).variants()
        except MegatronMetaError:
            return None  # the train stage's own check names the damage
    return None


def train_problems(study: Study, node: Node, world_size: Optional[int]) -> List[str]:
    from megatron_meta.models.presets import get_preset
    from megatron_meta.parallel import validate_layout
    from megatron_meta.training.config import parse_args
    from megatron_meta.training.preflight import validate

    try:
        config = parse_args(list(node.args[1:]))
        validate(config)
        if config.model.preset is not None:
            preset = get_preset(config.model.preset)
            tp = config.parallel.tensor_model_parallel_size
            validate_layout(world_size or tp, tp, preset.num_attention_heads,
                            preset.num_query_groups, config.training.micro_batch_size,
                            config.training.global_batch_size)
    except MegatronMetaError as e:
        return [str(e)]
    variants = _planned_variants(study)
    if variants is not None and config.data.variant not in variants:
        return [f"--variant {config.data.variant}: preprocessing writes {', '.join(variants)}; "
                "add it to metadata-variants or train another"]
    return []


def mcq_problems(study: Study) -> List[str]:
    path, source = mcq_benchmark(study)
    if path is None:
        return ["no benchmark: give stages.mcq.benchmark: FILE (the paper's qa_metacul.jsonl), "
                "set $MEGATRON_META_BENCHMARK, or add data.benchmark: {} to build one from the "
                "held-out news"]
    if source.startswith("built") or not os.path.isfile(path):
        return []  # built by the study / reported missing by the input check
    from megatron_meta.evaluation.mcq.data import read_benchmark

    try:
        read_benchmark(path)
    except MegatronMetaError as e:
        return [f"{source}: {e}"]
    return []


def where(study: Study, node: Node) -> str:
    """The place in the study file that sets this node's flags."""
    scope = KINDS[node.kind].scope
    if scope == "data":
        return f"data.{node.kind}"
    if node.kind == "train":
        return f"defaults.train / runs[{node.run.entry}].train"
    return f"stages.{node.kind}"


def slurm_problems(study: Study, node: Node) -> List[str]:
    """What cannot work on Slurm: a training job's ``time`` too short (``study.slurm``'s check,
    the one ``submit`` makes again before sending anything)."""
    if KINDS[node.kind].launcher != "torchrun":
        return []
    from megatron_meta.cluster import time_limit
    from megatron_meta.study.slurm import time_minutes

    try:
        time_limit.check_limit(time_minutes(study, node))
    except ConfigError as e:
        return [f"slurm time: {e}"]
    return []


def check_study(
    study: Study, nodes: List[Node], world_size: Optional[int] = None, slurm: bool = False
) -> None:
    """Raise one ConfigError listing every problem of the study (nothing has run); ``slurm``:
    the study goes to Slurm, so its Slurm settings are checked too."""
    outputs = [os.path.abspath(n.output) for n in nodes]
    found: Dict[str, Tuple[List[str], List[str]]] = {}  # problem -> (places, nodes)

    def add(problem: str, place: str, name: str) -> None:
        places, names = found.setdefault(problem, ([], []))
        places.append(place) if place not in places else None
        names.append(name)

    no_benchmark = mcq_benchmark(study)[0] is None
    for node in nodes:
        problems = parse_problems(node.args) + input_problems(node, outputs)
        if node.kind == "mcq" and no_benchmark:  # said once, with what to do, below
            problems = [p for p in problems if "--benchmark" not in p]
        if node.kind == "train" and not problems:
            problems += train_problems(study, node, world_size)
        for problem in problems:
            manifest = problem.startswith("--data-manifest") and "manifest" in study.data
            add(problem, "data.manifest" if manifest else where(study, node), node.name)
        for problem in slurm_problems(study, node) if slurm else []:
            add(problem, "slurm.time", node.name)
    if any(n.kind == "mcq" for n in nodes):
        for problem in mcq_problems(study):
            add(problem, "stages.mcq", "mcq")
    if not found:
        return
    lines = [f"{study.path}: {len(found)} problem(s), nothing was run:"]
    for problem, (places, names) in found.items():
        shown = ", ".join(names[:2]) + (f" and {len(names) - 2} more" if len(names) > 2 else "")
        lines.append(f"  {' / '.join(places)} ({shown}): {problem}")
    raise ConfigError("\n".join(lines))
