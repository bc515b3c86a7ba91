"""The study as a graph of nodes (``kind/run``), in an order where dependencies come first."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from megatron_meta.study.kinds import KINDS, _selected
from megatron_meta.study.runs import Run, Study


@dataclass
class Node:
    """One command of the study."""

    name: str
    """``kind`` (data and study scope) or ``kind/run``."""
    kind: str
    """Key of :data:`~megatron_meta.study.kinds.KINDS`."""
    args: List[str]
    """``megatron-meta`` arguments, subcommand first."""
    output: str
    """What exists once the node is done."""
    deps: List[str] = field(default_factory=list)
    """Nodes that must succeed first."""
    run: Optional[Run] = None
    """The run it belongs to (scope run)."""

    @property
    def group(self) -> str:
        """Nodes of one kind from one ``runs:`` entry share a Slurm array."""
        return f"{self.kind}@{self.run.entry}" if self.run else self.name

    def done(self) -> bool:
        return KINDS[self.kind].done(self.output)


def build_graph(study: Study) -> List[Node]:
    """Every node, dependencies first (file order otherwise)."""
    nodes: List[Node] = []
    data_kinds = [k for k, v in KINDS.items() if v.scope == "data" and k in study.data]
    for kind in data_kinds:
        args, out = KINDS[kind].build(study, None, dict(study.data[kind] or {}))
        deps = [d for d in KINDS[kind].after if d in data_kinds]
        nodes.append(Node(kind, kind, args, out, deps))
    run_kinds = ["train"] + [k for k in study.stages if KINDS[k].scope == "run"]
    for run in study.runs:
        present: Dict[str, str] = {}
        for kind in run_kinds:
            if kind != "train" and not _selected(study, kind, run):
                continue
            flags = dict(study.stages.get(kind, {}))
            args, out = KINDS[kind].build(study, run, flags)
            name = f"{kind}/{run.name}"
            deps = [present[a] for a in KINDS[kind].after if a in present][:1]
            deps += [a for a in KINDS[kind].after if a in data_kinds]
            if kind == "train":
                deps = [n.name for n in nodes if n.kind == "preprocess"]
            nodes.append(Node(name, kind, args, out, deps, run))
            present[kind] = name
    for kind in (k for k in study.stages if KINDS[k].scope == "study"):
        args, out = KINDS[kind].build(study, None, dict(study.stages[kind]))
        deps = [n.name for n in nodes if n.kind in KINDS[kind].after]
        nodes.append(Node(kind, kind, args, out, deps))
    return nodes


def dependants(nodes: List[Node], failed: str) -> List[str]:
    """Every node that (transitively) waits for ``failed``."""
    out, frontier = [], {failed}
    for node in nodes:  # dependencies come first, so one pass suffices
        if frontier & set(node.deps):
            out.append(node.name)
            frontier.add(node.name)
    return out
