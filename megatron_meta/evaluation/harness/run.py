"""Run a task written by :mod:`.task` through lm-evaluation-harness in this process, and
read back its per-question choices (for the agreement test and the speed benchmark)."""

from __future__ import annotations

import os
from typing import Dict, List, Optional

import numpy as np


def run_harness(model_dir: str, task_dir: str, tasks: List[str], limit: Optional[int] = None,
                batch_size: int = 8) -> Dict[str, Dict[int, Dict]]:
    """task -> question id -> ``{"chosen", "chosen_norm", "logliks"}`` as the harness scored it."""
    # The harness's datasets loader otherwise tries the network first (and fails slowly).
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        from megatron_meta.errors import ConfigError

        raise ConfigError(f"the harness is not installed ({e}): pip install -e '.[harness]'") from e

    out = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=tasks,
        device="cpu", batch_size=batch_size, limit=limit, log_samples=True,
        task_manager=TaskManager(include_path=os.path.abspath(task_dir)),
    )
    choices: Dict[str, Dict[int, Dict]] = {}
    for task in tasks:
        per_q = {}
        for sample in out["samples"][task]:
            doc = sample["doc"]
            lls = np.array([resp[0] for resp in sample["filtered_resps"]], dtype=np.float64)
            lengths = np.array([len(o) for o in doc["options"]], dtype=np.float64)
            per_q[int(doc["id"])] = dict(chosen=int(np.argmax(lls)),
                                        chosen_norm=int(np.argmax(lls / lengths)),
                                        logliks=[float(x) for x in lls])
        choices[task] = per_q
    return choices
