"""Stages of a multi-command job: banners, timings, skip-if-done, and filtered live output.

A stage is skipped when its outputs exist and a stamp file records that they were made with the
same settings (so a re-run resumes after the last completed stage and a changed setting redoes
what depends on it). Commands run as subprocesses whose output streams live to the console,
minus library noise, and completely to a log file.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

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


class Stages:
    """Runs stages in order; skips one whose outputs exist and whose settings are unchanged."""

    def __init__(self, state_dir: str, total: int, force: bool = False):
        self.state_dir = state_dir
        self.total = total
        self.force = force
        self.index = 0
        self.timings: List[Tuple[str, float, str]] = []

    def _stamp(self, name: str) -> str:
        return os.path.join(self.state_dir, f"{name}.json")

    def announce(self, name: str, what: str) -> None:
        """Banner of a stage that is always run (no outputs to check)."""
        self.index += 1
        banner(self.index, self.total, name, what)

    def run(
        self, name: str, what: str, outputs: List[str], settings: Dict,
        action: Callable[[], None],
    ) -> None:
        """Run ``action`` unless ``outputs`` exist and the last run had the same ``settings``."""
        self.announce(name, what)
        stamp = self._stamp(name)
        if not self.force and all(os.path.exists(p) for p in outputs) and os.path.exists(stamp):
            with open(stamp, encoding="utf-8") as f:
                if json.load(f) == json.loads(json.dumps(settings)):
                    print(f"skipped: outputs complete ({', '.join(outputs)})", flush=True)
                    self.timings.append((name, 0.0, "skipped"))
                    return
        start = time.perf_counter()
        action()
        missing = [p for p in outputs if not os.path.exists(p)]
        if missing:
            raise MegatronMetaError(f"stage {name} finished but did not write {', '.join(missing)}")
        seconds = time.perf_counter() - start
        os.makedirs(os.path.dirname(stamp), exist_ok=True)
        with open(stamp + ".tmp", "w", encoding="utf-8") as f:
            json.dump(settings, f, indent=2, sort_keys=True)
        os.replace(stamp + ".tmp", stamp)
        self.timings.append((name, seconds, "ran"))
        print(f"--- {name} done in {seconds:.1f} s", flush=True)
