"""Which rank on which node died, and how: read from the attempt's node logs.

torchrun (``torch.distributed.elastic``) ends a failed node with a summary per failed rank::

      host      : node-7
      rank      : 1 (local_rank: 1)
      exitcode  : -9 (pid: 4242)
      ...
      traceback : Signal 9 (SIGKILL) received by PID 4242

``python -m megatron_meta.launch`` (what ``slurm/launch.sh`` runs) prints the same facts as
``failed rank: 1 (local_rank: 1) exitcode: -9`` lines before its own message.
``slurm/launch.sh`` writes node N's output to ``node{N}.log``. A rank killed by a signal
(negative exit code) is the cause; the ranks that then failed on a closed connection are not.
"""

from __future__ import annotations

import glob
import os
import re
import signal
from dataclasses import dataclass
from typing import List, Optional

_FAILURE = re.compile(
    r"rank\s*:\s*(?P<rank>\d+) \(local_rank: (?P<local>\d+)\)\s*\n"
    r"\s*exitcode\s*:\s*(?P<code>-?\d+)"
)
# The same facts as ``python -m megatron_meta.launch`` prints them (it ends with our message
# instead of torchrun's summary): ``megatron-meta launch: failed rank: 1 (local_rank: 1) exitcode: -9``.
_LAUNCH_FAILURE = re.compile(
    r"failed rank: (?P<rank>\d+) \(local_rank: (?P<local>\d+)\) exitcode: (?P<code>-?\d+)"
)


@dataclass
class RankFailure:
    rank: int
    node_index: int
    node: str
    exit_code: int

    @property
    def how(self) -> str:
        if self.exit_code < 0:
            try:
                return f"killed by {signal.Signals(-self.exit_code).name}"
            except ValueError:
                return f"killed by signal {-self.exit_code}"
        return f"exited with code {self.exit_code}"

    def describe(self) -> str:
        return f"rank {self.rank} on node {self.node} (node {self.node_index}) {self.how}"


def failures(log_dir: str, node_names: List[str]) -> List[RankFailure]:
    """Every failed rank named in ``log_dir/node*.log`` (the latest summary of each log)."""
    found = []
    for path in sorted(glob.glob(os.path.join(log_dir, "node*.log"))):
        index_text = os.path.basename(path)[4:-4]
        if not index_text.isdigit():
            continue
        index = int(index_text)
        name = node_names[index] if index < len(node_names) else f"#{index}"
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        for pattern in (_FAILURE, _LAUNCH_FAILURE):
            for m in pattern.finditer(text):
                found.append(RankFailure(int(m["rank"]), index, name, int(m["code"])))
    return found


def root_cause(log_dir: Optional[str], node_names: List[str]) -> Optional[RankFailure]:
    """The rank that died first in kind: one killed by a signal, else the first that failed."""
    if not log_dir:
        return None
    found = failures(log_dir, node_names)
    signalled = [f for f in found if f.exit_code < 0]
    return (signalled or found or [None])[0]
