"""Output safety for every command that writes: checked before the work starts, never clobbering.

Below every stage (beside ``errors`` and ``manifest``), so each command imports it downward.

* :func:`check_output` refuses, before any work, an output that cannot be created (a path under a
  file, a prefix ending in ``/``, an unwritable folder), an existing non-empty output folder unless
  ``--overwrite`` is given, and an output inside (or equal to, or holding) one of the command's
  inputs.
* :func:`install_folder` moves a completed temporary folder into place; with ``--overwrite`` it
  replaces only the files the command itself writes and leaves every other file alone.
* :func:`disk_full_guard` turns a full disk (ENOSPC/EDQUOT) into one line naming the output and the
  space it needed, after removing the temporaries it was given.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from typing import Callable, Iterable, Iterator, List, Optional, Sequence

from megatron_meta.errors import ConfigError, MegatronMetaError, OutputError

FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _existing_ancestor(path: str) -> str:
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    return parent


def check_output(
    path: str,
    flag: str,
    *,
    kind: str = "folder",
    overwrite: bool = False,
    inputs: Sequence[Optional[str]] = (),
    offers_overwrite: bool = True,
) -> str:
    """Refuse an output that would lose data or cannot be created; returns its absolute path.

    ``kind``: ``folder`` (must not exist non-empty unless ``overwrite``), ``file`` (must not be a
    folder; a results file is the command's own and is replaced), ``prefix`` (files
    ``PREFIX.*``; must not end in ``/``) or ``any`` (only creatable). ``inputs``: files or
    folders the command reads: a folder output may neither equal, lie inside of, nor contain
    one; a file or prefix output may not be one.
    ``offers_overwrite``: whether the command has ``--overwrite`` (the message suggests it).
    """
    if not path:
        raise ConfigError(f"{flag} is empty: give a path")
    if kind == "prefix" and (path.endswith(("/", os.sep)) or os.path.isdir(path)):
        raise ConfigError(
            f"{flag} {path}: a prefix names files (PREFIX.bin, ...), not a folder; "
            f"add a file name, e.g. {os.path.join(path, 'data')}"
        )
    absolute = os.path.abspath(path)
    for given in inputs:
        if not given:
            continue
        # A folder output is replaced as a whole, so it may not hold or lie in an input; a new file
        # beside the inputs (results in a checkpoint folder) harms nothing unless it is one.
        if kind in ("file", "prefix"):
            overlaps = os.path.realpath(absolute) == os.path.realpath(given)
        else:
            overlaps = _inside(absolute, given) or (
                os.path.isdir(absolute) and _inside(given, absolute))
        if overlaps:
            raise ConfigError(
                f"{flag} {path} overlaps the input {given}: writing there could destroy what is "
                "being read; choose an output outside it"
            )
    parent = _existing_ancestor(absolute)
    if not os.path.isdir(parent):
        raise ConfigError(f"{flag} {path}: {parent} is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: cannot create it, {parent} is not writable")
    if kind == "folder" and os.path.exists(absolute):
        if not os.path.isdir(absolute):
            raise ConfigError(
                f"{flag} {path} is an existing file, not a folder; choose another path"
            )
        if os.listdir(absolute) and not overwrite:
            fix = (", or pass --overwrite to replace the files this command writes (others are "
                   "kept)" if offers_overwrite else "")
            raise ConfigError(
                f"{flag} {path} exists and is not empty: choose another folder{fix}"
            )
        if not os.access(absolute, os.W_OK | os.X_OK):
            raise ConfigError(f"{flag} {path}: the folder is not writable")
    if kind == "file" and os.path.isdir(absolute):
        raise ConfigError(f"{flag} {path} is a folder; give a file name")
    return absolute


def safe_name(name: str, where: str) -> str:
    """``name`` if it is one safe path component (it becomes a folder or file name), else refuse."""
    ok = (
        name not in ("", ".", "..")
        and "/" not in name
        and os.sep not in name
        and "\0" not in name
        and not name.startswith((".", "-"))
        and name.isprintable()
    )
    if not ok:
        raise ConfigError(
            f"{where}: name {name!r} is not a safe file name (no '/', '..', leading '.' or '-', "
            "control characters); use letters, digits, '-', '_' and '.'"
        )
    return name


def install_folder(tmp: str, output: str, owned: Callable[[str], bool]) -> None:
    """Move the complete folder ``tmp`` to ``output``.

    A missing or empty ``output`` is replaced by one rename. An existing one (allowed by
    ``--overwrite`` in :func:`check_output`) receives ``tmp``'s files one by one; files there that
    ``owned(name)`` says this command writes, and that the new output lacks (e.g. shards of an
    earlier, larger export), are removed; every other file stays.
    """
    if os.path.isdir(output) and os.listdir(output):
        new = set(os.listdir(tmp))
        for name in sorted(new):
            target = os.path.join(output, name)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            os.replace(os.path.join(tmp, name), target)
        for name in os.listdir(output):
            if name not in new and owned(name) and os.path.isfile(os.path.join(output, name)):
                os.remove(os.path.join(output, name))
        os.rmdir(tmp)
        return
    if os.path.isdir(output):
        os.rmdir(output)
    os.replace(tmp, output)


def write_json(path: str, obj: object, indent: Optional[int] = None) -> None:
    """``obj`` as JSON under a temporary name, renamed when complete (a reader never sees half)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")
    os.replace(tmp, path)


def _size(paths: Iterable[str]) -> int:
    total = 0
    for path in paths:
        if os.path.isfile(path):
            total += os.path.getsize(path)
        elif os.path.isdir(path):
            for root, _, files in os.walk(path):
                total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def _remove(paths: Iterable[str]) -> None:
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            with contextlib.suppress(OSError):
                os.remove(path)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def is_disk_full(error: BaseException) -> bool:
    """True for ENOSPC/EDQUOT, also when wrapped (torch's checkpoint writers wrap OSErrors)."""
    seen: List[BaseException] = []
    while error is not None and error not in seen:
        seen.append(error)
        if isinstance(error, OSError) and error.errno in FULL_DISK:
            return True
        if "No space left on device" in str(error) or "Disk quota exceeded" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def looks_full(error: BaseException, path: str, needed: Optional[int] = None) -> bool:
    """:func:`is_disk_full`, or a write that failed (not a user error) where the filesystem has
    almost no space left, or less than ``needed``: some writers (torch's zip serializer) report a
    short write only as a position mismatch, and may have removed their partial file."""
    if is_disk_full(error):
        return True
    if isinstance(error, (MegatronMetaError, KeyboardInterrupt, SystemExit)):
        return False
    usage = shutil.disk_usage(_existing_ancestor(os.path.join(path, "x")))
    return usage.free < max(64 * 1024, usage.total // 100, needed or 0)


def disk_full_message(
    output: str, written: int, needed: Optional[int] = None, removed: str = "the partial output"
) -> str:
    where = _existing_ancestor(os.path.join(output, "x"))
    free = shutil.disk_usage(where).free
    if needed:
        need = f"about {human(needed)}"
    elif written:
        need = f"more than the {human(written)} written"
    else:
        need = "more than is free"
    return (
        f"{output}: disk full while writing it (it needs {need}; {human(free)} free on the "
        f"filesystem of {where}); {removed} was removed: free space or choose another location "
        "and run again"
    )


@contextlib.contextmanager
def disk_full_guard(
    output: str, temporaries: Callable[[], Sequence[str]], needed: Optional[int] = None
) -> Iterator[None]:
    """On a full disk: remove ``temporaries()`` and raise :class:`OutputError` naming ``output``."""
    try:
        yield
    except BaseException as e:
        if not looks_full(e, output, needed):
            raise
        paths = list(temporaries())
        written = _size(paths)
        _remove(paths)
        raise OutputError(disk_full_message(output, written, needed)) from None
