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


def main(argv: Optional[List[str]] = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        run(args)
    except ChildFailedError as e:
        # A rank that recorded a message and exited by itself failed first; torchrun stopped the
        # others with a signal (possibly right after one of them recorded the same message).
        failures = sorted(e.failures.items(), key=lambda kv: (
            not kv[1].error_file_data.get("message"), kv[1].exitcode <= 0, kv[0]))
        rank, first = failures[0]
        message = first.message if first.error_file_data.get("message") else ""
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
