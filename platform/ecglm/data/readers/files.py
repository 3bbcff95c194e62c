"""File-level checks every reader runs before it opens a file, so that a missing, dangling,
unreadable or non-regular file gives a :class:`RecordError` with a precise field and reason
instead of a bare ``OSError`` (or, worse, a silent skip) from deep inside a library.

=============  ==============================================================================
field          when
=============  ==============================================================================
``file``       nothing at the path (``missing file``), a folder or device instead of a file
``symlink``    a symbolic link whose target does not exist (``dangling symlink``) or a loop
``permission`` the file exists but this process may not read it (``permission denied``)
=============  ==============================================================================
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ecglm.data.errors import RecordError


def require_file(record: str, path: str | Path) -> int:
    """Check that ``path`` is a regular file this process can read; return its size in bytes.

    Args:
        record: the record the file belongs to (named in the error).
        path: the file (a symlink is followed).

    Raises:
        RecordError: ``file`` (missing, or not a regular file), ``symlink`` (dangling or
            looping link, naming its target) or ``permission`` (cannot be opened for reading).
    """
    p = str(path)
    try:
        link = os.lstat(p)
    except FileNotFoundError:
        raise RecordError(record, "file", f"missing file {p}") from None
    except OSError as exc:
        raise RecordError(record, "file", f"cannot stat {p}: {exc.strerror}") from None
    try:
        st = os.stat(p)
    except OSError as exc:
        if stat.S_ISLNK(link.st_mode):
            target = os.readlink(p)
            if exc.errno == errno.ELOOP:
                raise RecordError(record, "symlink", f"symlink loop {p} -> {target}") from None
            raise RecordError(record, "symlink", f"dangling symlink {p} -> {target} (the "
                                                 f"target does not exist)") from None
        raise RecordError(record, "file", f"cannot stat {p}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise RecordError(record, "file", f"{p} is {kind}, expected a file")
    try:
        with open(p, "rb"):
            pass
    except PermissionError:
        raise RecordError(record, "permission", f"cannot read {p}: permission denied "
                                                f"(mode {stat.filemode(st.st_mode)})") from None
    except OSError as exc:
        raise RecordError(record, "file", f"cannot open {p}: {exc.strerror}") from None
    return int(st.st_size)
