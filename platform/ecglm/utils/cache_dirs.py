"""Write-once cache folders (converted LLMs, tiny random models): build in a temporary folder
next to the target and rename it into place, so concurrent processes (Ray workers, test
sessions) never see a half-written folder; the loser of a race keeps the winner's folder."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def is_ready(folder: Path, marker: str) -> bool:
    """True when ``folder`` holds its ``marker`` file and a ``config.json`` (finished)."""
    return (folder / marker).is_file() and (folder / "config.json").is_file()


def open_permissions(folder: Path) -> None:
    """Make a finished folder readable by other users (``mkdtemp`` creates it 0700)."""
    folder.chmod(0o755)
    for item in folder.iterdir():
        if item.is_file():
            item.chmod(0o644)


def write_atomically(target: Path, build: Callable[[Path], dict], marker: str) -> Path:
    """Run ``build(tmp_dir)`` and rename ``tmp_dir`` to ``target`` unless another process won.

    ``build`` writes the folder's files and returns provenance info, stored as JSON in
    ``marker``. An existing finished ``target`` is returned untouched.

    Raises:
        RuntimeError: the folder is still incomplete afterwards (``build`` wrote no
            ``config.json``).
    """
    if is_ready(target, marker):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        info = build(tmp)
        (tmp / marker).write_text(json.dumps(info, indent=2, sort_keys=True))
        open_permissions(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not is_ready(target, marker):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if not is_ready(target, marker):
        raise RuntimeError(f"{target} was not written completely")
    return target
