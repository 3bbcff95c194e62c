"""Readable command output: ecglm's own lines on the terminal, everything else in a log file.

A command run under :func:`quiet_output` shows what ecglm prints in the driver (stage banners,
``[tag] ...`` progress lines with rate and ETA, the final summary or JSON) and, from Ray
workers, only ecglm's progress lines (the ``(RayTrainWorker pid=...)`` prefix removed). Ray's
and the libraries' logs, warnings, progress bars and the rest of the worker output go to the
log file, whose path is printed first; when the command fails the file's last lines are shown.
``ecglm -v`` skips all of this and shows everything.

Mechanism: ``sys.stdout``/``sys.stderr`` are replaced for the duration of the command by
line filters (as :func:`contextlib.redirect_stdout` does); Ray prints forwarded worker output
through them, and ``logging`` stream handlers that write to the terminal are pointed at them.
"""

from __future__ import annotations

import io
import logging
import re
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, TextIO

PROGRESS_TAGS: tuple[str, ...] = ("[train]", "[eval]", "[pretrain]", "[tasks]", "[ecglm",
                                  "[retrieval]", "[serve]", "[demo]", "[tune]", "[shards]")
"""How ecglm's own progress lines start; worker lines starting so reach the terminal."""

ERROR_PREFIXES: tuple[str, ...] = ("error:", "config error:")
"""How the messages ecglm writes to stderr for the user start; these always reach the terminal."""

TAIL_LINES = 40
"""Lines of the log file shown when a command fails."""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_WORKER = re.compile(r"^\((?P<who>[^()]*?(?:pid=\d+|raylet|gcs_server|monitor)[^()]*)\) ")


def split_worker_prefix(line: str) -> tuple[Optional[str], str]:
    """``(who, message)`` of a line Ray forwarded from a worker (``(Name pid=N) message``,
    colour codes removed); ``(None, line)`` for a line the driver printed itself."""
    plain = _ANSI.sub("", line)
    m = _WORKER.match(plain)
    if m is None:
        return None, line
    return m.group("who"), plain[m.end():]


def is_progress(message: str) -> bool:
    """True when ``message`` is one of ecglm's progress lines (see :data:`PROGRESS_TAGS`)."""
    return message.lstrip().startswith(PROGRESS_TAGS)


def show_on_stdout(line: str) -> Optional[str]:
    """Text of ``line`` to show on the terminal's stdout, or None to keep it in the log only:
    the driver's own lines as they are, a worker's progress lines without Ray's prefix."""
    who, message = split_worker_prefix(line)
    if who is None:
        return line
    return message if is_progress(message) else None


def show_on_stderr(line: str) -> Optional[str]:
    """Like :func:`show_on_stdout` for stderr, where the driver's lines are library logs,
    warnings and progress bars: only ecglm's progress lines (driver or worker) and its error
    messages (:data:`ERROR_PREFIXES`, driver only) are shown."""
    who, message = split_worker_prefix(line)
    if who is None and line.startswith(ERROR_PREFIXES):
        return line
    return message if is_progress(message) else None


class LineFilter(io.TextIOBase):
    """A text stream that copies every complete line to ``log`` and passes to ``terminal`` the
    text ``show(line)`` returns (None: nothing). Thread-safe; partial lines wait for their end
    (``\\r`` progress-bar updates count as line ends)."""

    def __init__(self, terminal: TextIO, log: TextIO, show: Callable[[str], Optional[str]]
                 ) -> None:
        super().__init__()
        self.terminal = terminal
        self.log = log
        self.show = show
        self._pending = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.terminal, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        with self._lock:
            lines = re.split(r"(?<=[\n\r])", self._pending + text)
            self._pending = lines.pop() if not lines[-1].endswith(("\n", "\r")) else ""
            for line in lines:
                if not line:
                    continue
                self.log.write(line)
                shown = self.show(line.rstrip("\r\n"))
                if shown is not None and line.endswith("\n"):
                    self.terminal.write(shown + "\n")
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self.log.flush()
            self.terminal.flush()

    def close_pending(self) -> None:
        """Write out a last line that never got its newline."""
        if self._pending:
            self.write("\n")


def log_file(output_dir: str | Path, name: str, command: str) -> Path:
    """``<output_dir>/<name>/logs/<command>-<UTC time>.log`` (the folder is created)."""
    folder = Path(output_dir) / name / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return (folder / f"{command.replace(' ', '-')}-{stamp}.log").resolve()


def _retarget_handlers(old: object, new: TextIO) -> None:
    """Point every ``logging.StreamHandler`` (not file handlers) writing to ``old`` at ``new``."""
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if (isinstance(handler, logging.StreamHandler)
                    and not isinstance(handler, logging.FileHandler) and handler.stream is old):
                handler.setStream(new)


def tail(path: Path, n: int = TAIL_LINES) -> list[str]:
    """The last ``n`` lines of ``path`` (colour codes removed)."""
    with path.open(errors="replace") as fh:
        return [_ANSI.sub("", line.rstrip("\n")) for line in deque(fh, maxlen=n)]


@contextmanager
def quiet_output(path: Optional[Path], verbose: bool = False) -> Iterator[Optional[Path]]:
    """Run the body with ecglm's lines on the terminal and everything else in ``path``.

    ``verbose`` or ``path`` None: no change (yields None). On an exception the last
    :data:`TAIL_LINES` lines of the log are printed to stderr before it propagates.
    """
    if verbose or path is None:
        yield None
        return
    out, err = sys.stdout, sys.stderr
    with path.open("a", buffering=1, encoding="utf-8", errors="replace") as log:
        f_out, f_err = LineFilter(out, log, show_on_stdout), LineFilter(err, log, show_on_stderr)
        print(f"[ecglm] Ray and library logs: {path} (ecglm -v shows them here)", file=out,
              flush=True)
        sys.stdout, sys.stderr = f_out, f_err
        _retarget_handlers(out, f_out)
        _retarget_handlers(err, f_err)
        try:
            yield path
        except BaseException as exc:
            f_out.close_pending()
            f_err.close_pending()
            log.flush()
            sys.stdout, sys.stderr = out, err
            if not isinstance(exc, (KeyboardInterrupt, SystemExit)):
                print(f"[ecglm] failed ({type(exc).__name__}); last lines of {path}:",
                      file=err)
                for line in tail(path):
                    print(f"  | {line}", file=err)
                err.flush()
            raise
        finally:
            f_out.close_pending()
            f_err.close_pending()
            sys.stdout, sys.stderr = out, err
            _retarget_handlers(f_out, out)
            _retarget_handlers(f_err, err)
