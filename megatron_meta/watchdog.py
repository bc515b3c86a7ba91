"""A rank notices that its launcher or a peer died and exits, instead of training on or hanging.

torchrun's agent is every rank's parent process. When the agent is killed outright (``kill -9``,
an OOM kill), nothing tells its ranks: they keep training, then hang in the next collective once
one of them stops. :func:`watch_launcher` starts a daemon thread that checks, every few seconds,
whether this process was re-parented (its parent died) and then exits the rank with a message.
A peer that died shows as a failed collective on the others; :func:`peer_lost` recognizes it so
the CLI ends the rank with one line instead of a traceback.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Optional

EXIT_CODE = 3
"""Exit status of a rank stopped because its launcher died."""


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ


def watch_launcher(interval: float = 2.0) -> bool:
    """Under torchrun, exit this rank within about ``interval`` seconds of the launcher dying.

    Returns whether a watch was started (not outside torchrun, and once per process).
    """
    if not launched_by_torchrun() or getattr(watch_launcher, "_started", False):
        return False
    parent = os.getppid()
    rank = os.environ.get("RANK", "?")

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        # os._exit: the main thread may be blocked in a collective that never returns.
        sys.stderr.write(
            f"megatron-meta: rank {rank}: its launcher (torchrun, pid {parent}) died; this rank "
            "stops now (checkpoints already saved are complete; resume with the same --save)\n"
        )
        sys.stderr.flush()
        os._exit(EXIT_CODE)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()
    watch_launcher._started = True  # type: ignore[attr-defined]
    return True


# What gloo and NCCL say when the other end of a collective went away.
_PEER_GONE = ("Connection reset by peer", "Connection closed by peer", "Broken pipe",
              "remote process exited", "NCCL communicator was aborted")


def peer_lost(error: BaseException) -> Optional[str]:
    """A one-line message if ``error`` is a collective that failed because a peer rank died."""
    text = str(error)
    if not isinstance(error, RuntimeError) or not any(p in text for p in _PEER_GONE):
        return None
    rank = os.environ.get("RANK", "?")
    return (f"rank {rank} lost its connection to another rank ({text.splitlines()[0][:160]}); "
            "that rank or its launcher stopped first: its output says why")
