"""What a study is made of: its runs (a grid already expanded) and the study itself.

Kept apart from the file reader (:mod:`.spec`) so that the stage kinds (:mod:`.kinds`), which the
reader consults for valid stage names, can use these types without importing the reader.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

RUN_FIELDS = ("region", "exclude", "variant", "model")


@dataclass
class Run:
    """One model to pretrain, grid already expanded."""

    name: str
    """Unique name: its folder under ``runs/`` and its label in every result."""
    entry: int
    """Index of the ``runs:`` entry it came from (runs of one entry share a Slurm array)."""
    region: Optional[str] = None
    """Train on this region alone (None: every region not excluded)."""
    exclude: Optional[str] = None
    """Region left out (leave-one-region-out)."""
    variant: Optional[str] = None
    """Metadata variant (``--variant``)."""
    model: Optional[str] = None
    """Model preset (``--model``)."""
    train: Dict[str, Any] = field(default_factory=dict)
    """``megatron-meta train`` flags: defaults.train, then the entry's ``train:``."""


@dataclass
class Study:
    """A parsed study file."""

    path: str
    """The YAML file (absolute)."""
    name: str
    """Study name (Slurm job names start with it)."""
    output_dir: str
    """Absolute folder of every output, the ledger and the logs."""
    regions: List[str]
    """The data's regions."""
    data: Dict[str, Any]
    """``manifest`` or ``tokenizer`` / ``preprocess`` flags."""
    runs: List[Run]
    """Expanded runs, in file order."""
    stages: Dict[str, Dict[str, Any]]
    """Stage kind -> its flags (and ``only``), in file order."""
    slurm: Dict[str, Any]
    """Slurm settings (partition, account, qos, time, nodes, gpus_per_node, cpus_per_task,
    env, container_image, container_mounts, max_restarts, throttle, extra)."""
    protocol: str = "ours"
    """``protocol: paper``: every stage gets ``--protocol paper`` (the authors' behaviour)."""

    def path_in(self, *parts: str) -> str:
        return os.path.join(self.output_dir, *parts)
