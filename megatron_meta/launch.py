"""``python -m megatron_meta.launch``: torchrun, ending with our message instead of its traceback.

Takes torchrun's arguments unchanged::

    python -m megatron_meta.launch --nproc-per-node 2 -m megatron_meta.cli train --config ...

When a rank fails, torchrun (``torch.distributed.run``) ends with a ``ChildFailedError``
traceback after the rank's own one-line error. This entry point runs the same launcher but, on a
failed rank, prints the rank's message last (each rank that stopped on a user error records it in
torchrun's per-rank error file, see :func:`record_for_launcher`), with where the ranks' output
is, and exits with the rank's exit status.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import List, Optional

PROG = "megatron-meta launch"


def record_for_launcher(message: str) -> None:
    """Under torchrun, leave ``message`` in this rank's error file for the launcher to report."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"message": message, "timestamp": int(time.time())}, f)
    except OSError:
        pass  # the launcher then reports the exit status alone


def _logs_hint(args) -> str:
    if getattr(args, "log_dir", None):
        return f"each rank's output is under {args.log_dir}"
    return ("each rank's output is above (torchrun --log-dir DIR --redirects 3 keeps one file "
            "a rank)")


def _recorded(failure) -> bool:
    """Whether the rank left an error file (its own message), not torchrun's placeholder."""
    return os.path.isfile(failure.error_file)


def _cause_first(item):
    """Sort key: a rank that recorded its message, then not one torchrun itself stopped with
    SIGTERM after the first failure, then the earliest, then the lowest rank."""
    rank, failure = item
    return (not _recorded(failure), failure.exitcode == -signal.SIGTERM, failure.timestamp, rank)


def main(argv: Optional[List[str]] = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        run(args)
    except ChildFailedError as e:
        failures = sorted(e.failures.items(), key=_cause_first)
        rank, first = failures[0]
        for r, failure in failures:
            # One line a failed rank, the cause first, read back by cluster/crash.py.
            print(f"{PROG}: failed rank: {r} (local_rank: {failure.local_rank}) "
                  f"exitcode: {failure.exitcode}", file=sys.stderr)
        message = first.message if _recorded(first) else ""
        if isinstance(message, dict):  # torch's own error-file layout (an uncaught exception)
            message = str(message.get("message", ""))
        if not message:
            how = (f"signal {first.signal_name()}" if first.exitcode < 0
                   else f"exit status {first.exitcode}")
            message = f"rank {rank} stopped ({how}) without a message; see its output"
        others = f" ({len(failures) - 1} more rank(s) failed)" if len(failures) > 1 else ""
        print(f"{PROG}: error: {message}{others}; {_logs_hint(args)}", file=sys.stderr)
        return first.exitcode if first.exitcode > 0 else 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
