"""Find the records under folders and account for every other thing found there.

A folder is walked recursively (symlinked folders are followed, each real folder listed once):

===============================  ===========================================================
found                            becomes
===============================  ===========================================================
``X.hea`` (file or any symlink)  record ``X`` (the reader reports a dangling/unreadable one)
``X.mat`` without ``X.hea``      CPSC2018 record ``X.mat``
``X.dat``/``X.xyz`` without      a problem ``header``: orphan signal file (unless a header
``X.hea``                        of the folder names it as its signal file)
a dangling symlink that no       a problem ``symlink``
record covers
a folder that cannot be listed   a problem ``folder`` (permission denied, I/O error)
a folder seen before (symlink)   a problem ``symlink``: listed once, under its first path
anything else (CSV, annotations) counted in ``other_files``
===============================  ===========================================================

Nothing is dropped without a word: every file is a record, part of one (its signal file), a
problem entry or counted as another file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

SIGNAL_SUFFIXES: tuple[str, ...] = (".dat", ".xyz")
"""WFDB signal-file extensions that belong to the header of the same name."""


@dataclass(frozen=True)
class ScanEntry:
    """One thing to report: a record to read (``problem == ""``) or a problem found while
    listing (``problem`` is the field, ``reason`` what is wrong)."""

    path: str
    """Record path without extension (CPSC2018 records keep ``.mat``), or the file/folder at
    fault."""
    problem: str = ""
    reason: str = ""


@dataclass
class ScanResult:
    """Everything found under the scanned paths, in a deterministic order."""

    entries: list[ScanEntry] = field(default_factory=list)
    """Records and problems: per argument, sorted by path; duplicates collapsed."""
    other_files: int = 0
    """Files that are neither records, nor signal files of a record, nor problems
    (annotations, CSV, README ...): counted, not checked."""

    @property
    def records(self) -> list[str]:
        """The record paths (entries without a problem)."""
        return [e.path for e in self.entries if not e.problem]


def _lexists(path: str) -> bool:
    return os.path.lexists(path)


def header_signal_names(folder: str, names: list[str]) -> set[str]:
    """File names the WFDB headers in ``folder`` name as signal files (the first token of
    every non-comment line after the record line); unreadable headers contribute nothing."""
    out: set[str] = set()
    for name in names:
        if not name.lower().endswith(".hea"):
            continue
        try:
            text = Path(folder, name).read_bytes().decode("latin-1")
        except OSError:
            continue
        lines = [ln.split() for ln in text.splitlines()
                 if ln.strip() and not ln.lstrip().startswith("#")]
        out.update(tokens[0] for tokens in lines[1:] if tokens)
    return out


class _Walker:
    """Recursive listing of one argument folder into :class:`ScanEntry` items."""

    def __init__(self, seen_folders: dict[tuple[int, int], str]) -> None:
        self.entries: list[ScanEntry] = []
        self.other_files = 0
        self._seen = seen_folders

    def walk(self, root: str) -> None:
        stack = [root]
        while stack:
            folder = stack.pop()
            try:
                st = os.stat(folder)
                key = (st.st_dev, st.st_ino)
                if key in self._seen:
                    self.entries.append(ScanEntry(folder, "symlink", f"folder {folder} is "
                                                  f"{self._seen[key]} again (symlink); listed "
                                                  f"once, under its first path"))
                    continue
                self._seen[key] = folder
                with os.scandir(folder) as it:
                    items = sorted(it, key=lambda e: e.name)
            except PermissionError:
                self.entries.append(ScanEntry(folder, "folder", f"cannot list folder "
                                              f"{folder}: permission denied"))
                continue
            except OSError as exc:
                self.entries.append(ScanEntry(folder, "folder", f"cannot list folder "
                                              f"{folder}: {exc.strerror or exc}"))
                continue
            subfolders = self._files(folder, items)
            stack.extend(reversed(subfolders))

    def _files(self, folder: str, items: list[os.DirEntry[str]]) -> list[str]:
        """Classify the entries of one folder; returns its sub-folders."""
        names = [e.name for e in items]
        referenced: set[str] | None = None
        subfolders: list[str] = []
        for item in items:
            path = item.path
            try:
                is_dir = item.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                subfolders.append(path)
                continue
            stem, suffix = os.path.splitext(path)
            suffix = suffix.lower()
            dangling = item.is_symlink() and not os.path.exists(path)
            if suffix == ".hea":
                self.entries.append(ScanEntry(stem))
            elif suffix == ".mat":
                if not _lexists(stem + ".hea"):
                    self.entries.append(ScanEntry(path))
            elif suffix in SIGNAL_SUFFIXES:
                if _lexists(stem + ".hea"):
                    continue  # read (and reported) with its record
                if referenced is None:
                    referenced = header_signal_names(folder, names)
                if item.name in referenced:
                    continue
                what = "dangling symlink" if dangling else "signal file"
                self.entries.append(ScanEntry(path, "header", f"orphan {what} {path}: no "
                                              f"header {Path(stem).name}.hea and no header of "
                                              f"its folder names it"))
            elif dangling:
                self.entries.append(ScanEntry(path, "symlink", f"dangling symlink {path} -> "
                                              f"{os.readlink(path)} (the target does not "
                                              f"exist)"))
            else:
                self.other_files += 1
        return subfolders


def _record_argument(path: Path) -> str:
    """The record an explicit file argument names (extension optional)."""
    suffix = path.suffix.lower()
    if suffix == ".hea" or suffix in SIGNAL_SUFFIXES:
        return str(path.with_suffix(""))
    if suffix == ".mat":
        base = path.with_suffix("")
        return str(base) if _lexists(str(base) + ".hea") else str(path)
    if not _lexists(str(path) + ".hea") and _lexists(str(path) + ".mat"):
        return str(path) + ".mat"
    return str(path)


def scan_paths(paths: Iterable[str | Path]) -> ScanResult:
    """Records and problems under ``paths`` (folders searched recursively, see the module
    docstring). A path that is not a folder counts as one record even if it does not exist
    (the reader then reports it missing), so every argument is accounted for. Entries keep the
    order of the arguments; within a folder they are sorted by path."""
    result = ScanResult()
    seen_folders: dict[tuple[int, int], str] = {}
    seen: set[str] = set()
    for item in paths:
        p = Path(item)
        if p.is_dir():
            walker = _Walker(seen_folders)
            walker.walk(str(p))
            found = sorted(walker.entries, key=lambda e: e.path)
            result.other_files += walker.other_files
        else:
            found = [ScanEntry(_record_argument(p))]
        for entry in found:
            if entry.path not in seen:
                seen.add(entry.path)
                result.entries.append(entry)
    return result
