"""Helpers of the hostile-input and fault tests: a small real disk, file snapshots, damage."""

from __future__ import annotations

import contextlib
import os
import subprocess
from typing import Dict, Iterator, Tuple

import pytest


@contextlib.contextmanager
def small_disk(folder: str, size: str = "1m", read_only: bool = False) -> Iterator[str]:
    """A real tmpfs of ``size`` mounted at ``folder`` (needs root; the test is skipped without)."""
    os.makedirs(folder, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", folder], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs here ({result.stderr.strip() or 'not root'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", folder], capture_output=True)


def snapshot(root: str) -> Dict[str, Tuple[int, int]]:
    """Every file and folder under ``root``: path -> (size, mtime in ns); folders as (-1, 0)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            found[os.path.relpath(os.path.join(folder, d), root) + "/"] = (-1, 0)
        for f in files:
            st = os.stat(os.path.join(folder, f))
            found[os.path.relpath(os.path.join(folder, f), root)] = (st.st_size, st.st_mtime_ns)
    return found


def truncate(path: str, keep: float = 0.5) -> None:
    """Cut ``path`` to a fraction of its size (a copy interrupted, a disk that filled)."""
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))


def error_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if line.strip()]
