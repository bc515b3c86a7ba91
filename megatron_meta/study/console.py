"""The console of a study run on this machine: one line per stage, a progress bar, logs on disk.

Each stage is a subprocess whose every line goes to the stage's log file. The console gets a
line when the stage starts and one when it ends (state, time, key figure), and a progress bar
driven by training's ``iteration N/M`` lines; library progress bars, per-step dicts and warnings
stay in the log. On failure the last meaningful lines of the log are shown once, with the
command that reruns the stage. ``--verbose`` streams every line instead.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from typing import Dict, List, Optional

from megatron_meta.errors import MegatronMetaError

# Library noise, left out of the failure tail (it is all in the log): megatron-core's INFO
# chatter, Python warnings (a header line and an indented source line), DDP's parameter lists
# per bucket (tab-indented), one line per skipped bad record, Hugging Face progress bars.
_QUIET = re.compile(
    r"^\S+ INFO megatron\.core\.|^\S+ WARNING megatron_meta\.corpora\.bad_records: skipping|"
    r"^\S+\.py:\d+: \w*Warning: |^Params for bucket|^\t|^\s+warnings\.warn|.*\d+%\|"
)
_WARNING_HEADER = re.compile(r"^\S+\.py:\d+: \w*Warning: ")
_ITERATION = re.compile(r"\biteration\s+(\d+)\s*/\s*(\d+)(?:.*?\bloss\s+([0-9.eE+-]+))?")
TAIL_LINES = 15


class OutputFilter:
    """Decides which lines of a stage's output explain it (for the failure tail)."""

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


class ProgressBar:
    """``iteration N/M`` lines -> a bar redrawn in place (a terminal) or a line a quarter (a pipe)."""

    def __init__(self, label: str, stream=None, width: int = 30):
        self.label, self.width = label, width
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._quarter = 0
        self.drawn = False

    def update(self, line: str) -> None:
        m = _ITERATION.search(line)
        if not m or int(m.group(2)) < 1:
            return
        done, total = int(m.group(1)), int(m.group(2))
        loss = f"  loss {float(m.group(3)):.3f}" if m.group(3) else ""
        filled = min(self.width, self.width * done // total)
        text = f"      [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total}{loss}"
        if self.tty:
            self.stream.write("\r" + text)
            self.drawn = True
        elif 4 * done // total > self._quarter:
            self._quarter = 4 * done // total
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.drawn = False


def run_command(
    cmd: List[str], env: Optional[Dict[str, str]] = None, log_path: Optional[str] = None,
    verbose: bool = False, label: str = "",
) -> None:
    """Run ``cmd``; every line to ``log_path``, the console as described above.

    Raises :class:`MegatronMetaError` naming the exit code, the log and the command to rerun.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    keep = OutputFilter()
    bar = ProgressBar(label)
    tail: List[str] = []
    log = None
    if log_path:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        log = open(log_path, "w", encoding="utf-8")
        log.write("$ " + shlex.join(cmd) + "\n")
    if verbose:
        print("$ " + shlex.join(cmd), flush=True)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env, text=True, bufsize=1,
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if log:
                log.write(line)
            if verbose:
                sys.stdout.write("    " + line)
                sys.stdout.flush()
                continue
            if keep.show(line):
                tail = (tail + [line])[-TAIL_LINES:]
            bar.update(line)
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise
    finally:
        bar.close()
        if log:
            log.close()
    if code != 0:
        if not verbose:  # the console has not seen these lines yet
            sys.stdout.write("".join("      | " + t for t in tail))
        where = f"\n      full log: {log_path}" if log_path else ""
        raise MegatronMetaError(
            f"exit code {code}{where}\n      rerun: {shlex.join(cmd)}"
        )
