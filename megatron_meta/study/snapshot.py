"""A copy of the code and recipes that one ``study submit`` runs, so that queued jobs never see
later edits of the working tree (NeMo-Run snapshots its experiments the same way).

``{output_dir}/study/snapshots/{time}/`` holds the package (``megatron_meta/``), ``slurm/``,
the study file and every ``--config`` recipe the submitted commands name (rewritten to point at
the copy); the jobs' ``MM_HOME``/``MM_CODE`` point there.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Dict, List

from megatron_meta.study.graph import Node
from megatron_meta.study.spec import Study

_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


@dataclass
class Snapshot:
    root: str
    recipes: Dict[str, str] = field(default_factory=dict)
    """Recipe path as the study names it -> its copy."""

    def args(self, node: Node) -> List[str]:
        """The node's arguments with its recipes replaced by their copies."""
        out = list(node.args)
        for i, arg in enumerate(out[:-1]):
            if arg == "--config" and out[i + 1] in self.recipes:
                out[i + 1] = self.recipes[out[i + 1]]
        return out


def take_snapshot(repo: str, study: Study, nodes: List[Node]) -> Snapshot:
    """Copy the code and recipes of this submission (a new folder each time)."""
    base = os.path.join(study.output_dir, "study", "snapshots")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root, n = os.path.join(base, stamp), 1
    while os.path.exists(root):  # two submissions in one second
        n += 1
        root = os.path.join(base, f"{stamp}-{n}")
    tmp = root + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # ours: a submission interrupted while copying
    os.makedirs(tmp)
    for sub in ("megatron_meta", "slurm"):
        shutil.copytree(os.path.join(repo, sub), os.path.join(tmp, sub), ignore=_IGNORE)
    shutil.copy2(study.path, os.path.join(tmp, os.path.basename(study.path)))
    snap = Snapshot(root)
    os.makedirs(os.path.join(tmp, "recipes"))
    for node in nodes:
        for i, arg in enumerate(node.args[:-1]):
            recipe = node.args[i + 1]
            if arg == "--config" and recipe not in snap.recipes and os.path.isfile(recipe):
                name = f"{len(snap.recipes)}-{os.path.basename(recipe)}"
                shutil.copy2(recipe, os.path.join(tmp, "recipes", name))
                snap.recipes[recipe] = os.path.join(root, "recipes", name)
    os.replace(tmp, root)
    return snap
