"""The study file: data, runs (one or a grid), the stages after them, shared defaults.

    name: demo
    output_dir: ../runs/study-demo     # paths are relative to this file (--output-dir: to the cwd)
    regions: [America, Asia, Europe]   # the data's regions (local and leave-one-out runs)
    data:
      manifest: data/now.manifest.json # or: tokenizer: {flags}, preprocess: {flags}
    defaults:
      train: {config: examples/tiny_cpu.yaml, train-iters: 200}   # megatron-meta train flags
      slurm: {partition: gpu, time: "2-00:00:00", gpus_per_node: 4}
    runs:
      - name: "global-{variant}"       # {field} takes the grid's values
        variant: [full, none]          # a list makes a grid (every combination)
      - name: "loo-{exclude}"
        exclude: [Europe]              # leave-one-region-out
      - name: "local-{region}"
        region: [Asia]                 # trained on that region alone
        train: {train-iters: 100}      # per-run overrides of defaults.train
    stages:                            # after each run, in this order; `only:` narrows the runs
      perplexity: {variants: "full,none", max-documents: 100}
      convert: {}
      finetune: {data: alpaca.json, metadata-wrap: true, only: ["global-*"]}
      mcq: {benchmark: mcq.jsonl, scoring: loglik}
      report: {}

Flags are written as in the command line without the dashes (``train-iters: 200``); ``true``
gives a bare flag. ``protocol: paper`` at the top passes ``--protocol paper`` to every stage that
has it (and the paper's training flags to every run; README, protocol table).
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Dict, List, Optional

import yaml

from megatron_meta.errors import ConfigError
from megatron_meta.outputs import safe_name
from megatron_meta.study.kinds import KINDS
from megatron_meta.study.runs import RUN_FIELDS, Run, Study

__all__ = ["Run", "Study", "load_study"]

TOP_KEYS = ("name", "output_dir", "regions", "data", "defaults", "runs", "stages", "protocol")


def _mapping(value: Any, where: str) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping (key: value)")
    return dict(value)


def _expand(entry: Dict[str, Any], index: int, where: str) -> List[Run]:
    unknown = set(entry) - set(RUN_FIELDS) - {"name", "train"}
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; a run has name, "
            f"{', '.join(RUN_FIELDS)} and train"
        )
    if "name" not in entry:
        raise ConfigError(f"{where}: a run needs a name (with {{field}} for grid values)")
    axes = {
        k: entry[k] if isinstance(entry[k], list) else [entry[k]] for k in RUN_FIELDS if k in entry
    }
    if "region" in axes and "exclude" in axes:
        raise ConfigError(
            f"{where}: give region (local model) or exclude (leave-one-out), not both"
        )
    runs = []
    for combo in itertools.product(*axes.values()) if axes else [()]:
        values = {k: str(v) for k, v in zip(axes, combo)}
        try:
            name = str(entry["name"]).format(**values)
        except KeyError as e:
            raise ConfigError(f"{where}: name {entry['name']!r} uses {e}, which the run lacks")
        safe_name(name, f"{where}.name")  # it becomes runs/<name>/: nothing outside
        runs.append(
            Run(
                name=name,
                entry=index,
                **values,
                train=_mapping(entry.get("train"), f"{where}.train"),
            )
        )
    return runs


# Flags whose values are paths: in a study file they are relative to the study file.
PATH_KEYS = frozenset({"manifest", "config", "input", "tokenizer-model", "benchmark", "data",
                       "continent-map", "load", "pretrained-checkpoint", "hf"})
# Stage flags add the models they read (`mcq-baseline: {model: ...}`); a run's train flags may
# not (`model: tiny` there names a preset).
STAGE_PATH_KEYS = PATH_KEYS | {"model", "adapter"}
CORPUS_NAMES = frozenset({"news-articles"})  # --input words that name no file


def _resolve(flags: Dict[str, Any], base: str, keys: frozenset = PATH_KEYS) -> Dict[str, Any]:
    """``flags`` with relative path values joined to ``base`` (the study file's folder)."""

    def one(key: str, value: Any) -> Any:
        if isinstance(value, list):
            return [one(key, v) for v in value]
        if not isinstance(value, str) or not value or os.path.isabs(value):
            return value
        if key == "input" and value in CORPUS_NAMES:
            return value
        return os.path.normpath(os.path.join(base, os.path.expanduser(value)))

    return {k: one(k, v) if k in keys else v for k, v in flags.items()}


def load_study(path: str, output_dir: Optional[str] = None) -> Study:
    """Read and validate a study file; ``output_dir`` overrides the file's."""
    if not os.path.isfile(path):
        raise ConfigError(f"study file {path} not found")
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected the keys {', '.join(TOP_KEYS)} at the top")
    unknown = set(raw) - set(TOP_KEYS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(sorted(unknown))}; keys are {', '.join(TOP_KEYS)}"
        )
    here = os.path.dirname(os.path.abspath(path))
    defaults = _mapping(raw.get("defaults"), f"{path}: defaults")
    base_train = _resolve(_mapping(defaults.get("train"), f"{path}: defaults.train"), here)
    data = _resolve(_mapping(raw.get("data"), f"{path}: data"), here)
    for key, value in data.items():
        if isinstance(value, dict):
            data[key] = _resolve(value, here)
    if not data.get("manifest") and "preprocess" not in data:
        raise ConfigError(f"{path}: data needs a manifest (path) or preprocess (flags)")
    if not isinstance(raw.get("runs"), list) or not raw["runs"]:
        raise ConfigError(f"{path}: runs must be a non-empty list")
    runs: List[Run] = []
    for i, entry in enumerate(raw["runs"]):
        for run in _expand(_mapping(entry, f"{path}: runs[{i}]"), i, f"{path}: runs[{i}]"):
            run.train = {**base_train, **_resolve(run.train, here)}
            runs.append(run)
    names = [r.name for r in runs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{path}: run names must be unique; repeated: {', '.join(dupes)}")
    regions = [str(r) for r in raw.get("regions") or []]
    for run in runs:
        for key in ("region", "exclude"):
            value = getattr(run, key)
            if value is not None and value not in regions:
                raise ConfigError(
                    f"{path}: run {run.name}: {key} {value!r} is not in regions ({', '.join(regions)})"
                )
    stages = {
        k: _resolve(_mapping(v, f"{path}: stages.{k}"), here, STAGE_PATH_KEYS)
        for k, v in _mapping(raw.get("stages"), f"{path}: stages").items()
    }
    bad = [k for k in stages if k not in KINDS or KINDS[k].scope == "data"]
    if bad:
        valid = [k for k, v in KINDS.items() if v.scope != "data"]
        raise ConfigError(
            f"{path}: unknown stage(s) {', '.join(bad)}; stages are {', '.join(valid)}"
        )
    protocol = str(raw.get("protocol") or "ours")
    if protocol not in ("ours", "paper"):
        raise ConfigError(f"{path}: protocol {protocol!r}: choose ours or paper")
    if output_dir:  # a command-line flag: relative to the working directory
        base = os.path.abspath(output_dir)
    else:
        base = os.path.normpath(os.path.join(
            here, raw.get("output_dir") or os.path.join("runs", str(raw.get("name", "study"))),
        ))
    return Study(
        path=os.path.abspath(path),
        name=safe_name(
            str(raw.get("name") or os.path.splitext(os.path.basename(path))[0]), f"{path}: name"
        ),
        output_dir=base,
        regions=regions,
        data=data,
        runs=runs,
        stages=stages,
        slurm=_mapping(defaults.get("slurm"), f"{path}: defaults.slurm"),
        protocol=protocol,
    )
