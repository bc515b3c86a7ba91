"""The commands of a study run on this machine: banners and filtered live output.

Commands run as subprocesses whose output streams live to the console, minus library noise, and
completely to a log file. (Which stages are done is the study's business: megatron_meta/study.)
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from typing import Dict, List, Optional

from megatron_meta.errors import MegatronMetaError


def banner(index: int, total: int, name: str, what: str) -> None:
    line = f"==> [{index}/{total}] {name}: {what}"
    print("\n" + line + "\n" + "=" * min(len(line), 100), flush=True)


# Console noise of the stage programs (every line still goes to the stage's log file):
# megatron-core's INFO chatter, Python warnings (a header line and an indented source line),
# DDP's list of parameters per bucket (tab-indented), and one line per skipped bad record
# (the stage prints their count by reason).
_QUIET = re.compile(
    r"^\S+ INFO megatron\.core\.|^\S+ WARNING megatron_meta\.corpora\.bad_records: skipping|"
    r"^\S+\.py:\d+: \w*Warning: |^Params for bucket|^\t|^\s+warnings\.warn"
)
_WARNING_HEADER = re.compile(r"^\S+\.py:\d+: \w*Warning: ")


class OutputFilter:
    """Decides which lines of a stage's output reach the console."""

    def __init__(self, verbose: bool = False):
        self.verbose = verbose
        self._after_warning = False

    def show(self, line: str) -> bool:
        if self.verbose:
            return True
        after_warning, self._after_warning = self._after_warning, bool(_WARNING_HEADER.match(line))
        if after_warning and line[:1].isspace():
            return False  # the source line Python prints under a warning
        return not _QUIET.match(line)


def run_command(
    cmd: List[str], env: Optional[Dict[str, str]] = None, log_path: Optional[str] = None,
    verbose: bool = False,
) -> None:
    """Run ``cmd``, streaming its output line by line (training's tokens/s lines show live).

    Everything goes to ``log_path``; the console gets the lines :class:`OutputFilter` keeps.
    """
    print("$ " + shlex.join(cmd), flush=True)
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    keep = OutputFilter(verbose)
    tail: List[str] = []
    log = None
    if log_path:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        log = open(log_path, "w", encoding="utf-8")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env, text=True, bufsize=1,
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if log:
                log.write(line)
            tail = (tail + [line])[-40:]
            if keep.show(line):
                sys.stdout.write("    " + line)
                sys.stdout.flush()
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise
    finally:
        if log:
            log.close()
    if code != 0:
        if not verbose:  # the lines that explain a failure may have been filtered
            sys.stdout.write("".join("    | " + t for t in tail))
        where = f"; full log: {log_path}" if log_path else ""
        raise MegatronMetaError(f"command failed with exit code {code}: {shlex.join(cmd)}{where}")
