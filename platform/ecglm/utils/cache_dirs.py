"""Write-once cache folders (record shards, task rows, retrieval indexes, converted LLMs, tiny
vision towers), safe under concurrent writers (Ray workers, Tune trials, test sessions).

:func:`write_once` builds a folder into a temporary sibling named
``.<name>.tmp-<host>-<pid>-<random>`` and renames it into place (one ``rename(2)``, atomic on a
POSIX file system), so a reader sees either no folder or a finished one, never a half-written
one. A provenance marker (JSON: pid, host, time, plus what the builder returns) is written into
the temporary folder before the rename. When two processes race, the first rename wins; the
loser finds the finished folder, removes its own temporary folder and returns the winner's.
Temporary folders left by dead processes (same host, pid gone; other hosts: older than
:data:`STALE_AFTER_S`) are removed by the next writer of the same key.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

CACHE_MARKER = ".ecglm-cache.json"
"""Default marker file: provenance of a finished cache folder."""
STALE_AFTER_S = 24 * 3600.0
"""Age in seconds after which a temporary folder of another host counts as abandoned."""

_TMP_RE = re.compile(r"^(?P<host>.+)-(?P<pid>\d+)-(?P<rand>[0-9a-f]{8})$")
_ANY_TMP_RE = re.compile(r"^\..+\.(?:tmp|old)-(?P<suffix>.+-\d+-[0-9a-f]{8})$")
"""Any temporary folder written by :func:`write_once` (``suffix`` = host-pid-random)."""
_LEGACY_PID_RE = re.compile(r"^(?P<pid>\d+)$")
"""Temporary folders of earlier versions: ``.<name>.tmp-<pid>`` (shards)."""

Build = Callable[[Path], Optional[Mapping[str, Any]]]
"""Writes a folder's files into the given (empty) folder and returns provenance info for the
marker (or ``None``)."""


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def pid_alive(pid: int) -> bool:
    """True when a process with ``pid`` exists on this host (signal 0 probe)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def temp_name(target: Path) -> Path:
    """A fresh temporary sibling of ``target``: ``.<name>.tmp-<host>-<pid>-<8 hex>``."""
    return target.with_name(f".{target.name}.tmp-{_host()}-{os.getpid()}-"
                            f"{secrets.token_hex(4)}")


def _is_stale(path: Path, suffix: str, now: float) -> bool:
    """True when the temporary folder ``path`` (name suffix after ``.tmp-``) is abandoned."""
    m = _TMP_RE.match(suffix)
    if m is not None and m.group("host") != _host():
        try:
            return now - path.stat().st_mtime > STALE_AFTER_S
        except FileNotFoundError:
            return False
    m = m or _LEGACY_PID_RE.match(suffix)
    if m is None:  # unknown layout (e.g. ``<name>.tmp`` of earlier versions): by age only
        try:
            return now - path.stat().st_mtime > STALE_AFTER_S
        except FileNotFoundError:
            return False
    return not pid_alive(int(m.group("pid")))


def clean_stale(target: Path) -> list[Path]:
    """Remove abandoned temporary folders next to ``target`` (see module doc); returns them.

    Every ``.<key>.tmp-<host>-<pid>-<random>`` folder in ``target.parent`` is judged (a dead
    writer of another key leaves garbage too); the pid-only and pid-less names of earlier
    versions only for ``target`` itself. A temporary folder of a live process (this one
    included) is kept."""
    removed = []
    now = time.time()
    try:
        entries = list(target.parent.iterdir())
    except FileNotFoundError:
        return removed
    own = (f".{target.name}.tmp-", f".{target.name}.old-")
    for entry in entries:
        m = _ANY_TMP_RE.match(entry.name)
        if m is not None:
            stale = _is_stale(entry, m.group("suffix"), now)
        elif entry.name.startswith(own):
            stale = _is_stale(entry, entry.name[len(own[0]):], now)  # both prefixes: same length
        else:
            stale = entry.name == f"{target.name}.tmp" and _is_stale(entry, "", now)
        if stale and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def has_marker(folder: Path, marker: str = CACHE_MARKER,
               required: tuple[str, ...] = ()) -> bool:
    """True when ``folder`` holds ``marker`` and every file in ``required``."""
    return (folder / marker).is_file() and all((folder / f).is_file() for f in required)


def read_marker(folder: Path, marker: str = CACHE_MARKER) -> dict[str, Any]:
    """The provenance JSON of a finished folder (``{}`` when absent or unreadable)."""
    try:
        return json.loads((folder / marker).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _move_aside(target: Path) -> None:
    """Rename an outdated ``target`` out of the way and delete it (another process may have
    done it already)."""
    trash = target.with_name(f".{target.name}.old-{_host()}-{os.getpid()}-"
                             f"{secrets.token_hex(4)}")
    try:
        os.rename(target, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def write_once(target: Path, build: Build, *, marker: str = CACHE_MARKER,
               required: tuple[str, ...] = (),
               is_finished: Optional[Callable[[Path], bool]] = None) -> Path:
    """Return the finished cache folder ``target``, building it with ``build`` if needed.

    Args:
        target: the folder; its parent is created.
        build: ``build(tmp)`` writes the files into the empty folder ``tmp`` and returns
            provenance info (merged into the marker next to pid, host and time).
        marker: name of the marker file written last into the folder.
        required: files that must exist besides ``marker`` for the folder to count as finished
            (and that ``build`` must write).
        is_finished: when given, decides alone whether a folder is finished and up to date
            (e.g. its own manifest names the same inputs; folders written before the marker
            existed stay usable); default: ``marker`` and ``required`` exist. An existing
            ``target`` that is not finished is replaced by a new build.

    Returns:
        ``target`` (this process's build or, after a lost race, the winner's).

    Raises:
        RuntimeError: ``build`` did not write the ``required`` files.
        Exception: whatever ``build`` raises; its temporary folder is removed first.
    """
    def ready() -> bool:
        return is_finished(target) if is_finished else has_marker(target, marker, required)

    if ready():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target)
    tmp = temp_name(target)
    tmp.mkdir()
    try:
        info = dict(build(tmp) or {})
        missing = [f for f in required if not (tmp / f).is_file()]
        if missing:
            raise RuntimeError(f"{target}: the build wrote no {', '.join(missing)}")
        provenance = {"pid": os.getpid(), "host": socket.gethostname(),
                      "created_unix": round(time.time(), 3), "folder": target.name}
        (tmp / marker).write_text(json.dumps({**provenance, **info}, indent=2, sort_keys=True,
                                             default=str))
        if not ready():
            if target.exists():  # outdated or unfinished (no marker): replace it
                _move_aside(target)
            try:
                os.rename(tmp, target)
            except OSError:  # another process renamed its build into place first
                if not ready():
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if not ready():
        raise RuntimeError(f"{target} was not written completely")
    return target
