"""``{output_dir}/study/ledger.json``: node -> executor, job id, state, attempts, output."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict


class Ledger:
    """Read at start, written (temporary name, then rename) after every change."""

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, "study", "ledger.json")
        self.entries: Dict[str, Dict[str, Any]] = {}
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                self.entries = json.load(f)

    def get(self, node: str) -> Dict[str, Any]:
        return self.entries.get(node, {})

    def record(self, node: str, **values: Any) -> None:
        entry = self.entries.setdefault(node, {})
        entry.update(values, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.save()

    def save(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = f"{self.path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.entries, f, indent=2, sort_keys=True)
        os.replace(tmp, self.path)
