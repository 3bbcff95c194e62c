"""Readable command output: ecglm's own lines on the terminal, everything else in a log file.

A command run under :func:`quiet_output` shows what ecglm's own code prints in the driver
(stage banners, ``[tag] ...`` progress lines with rate and ETA, error messages, the final
summary or JSON) and, from Ray workers, only ecglm's progress lines (the
``(RayTrainWorker pid=...)`` prefix removed). What Ray and the libraries print or log
(Tune's tables, warnings, progress bars, the rest of the worker output) goes to the log file,
whose path is printed first; when the command fails the file's last lines are shown.
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
from types import FrameType
from typing import Iterator, Optional, TextIO

PROGRESS_TAGS: tuple[str, ...] = ("[train]", "[eval]", "[pretrain]", "[tasks]", "[ecglm",
                                  "[retrieval]", "[serve]", "[demo]", "[tune]", "[shards]")
"""How ecglm's own progress lines start; worker lines starting so reach the terminal."""

TAIL_LINES = 40
"""Lines of the log file shown when a command fails."""

PROGRESS_EVERY_S = 30.0
"""Off a terminal, a loop's progress lines are shown at most this often (the last always)."""

OWN_MODULES: tuple[str, ...] = ("ecglm",)
"""Modules whose own writes to stdout/stderr are ecglm's output (shown on the terminal)."""

PRINT_WRAPPERS: frozenset[str] = frozenset({
    "ray.experimental.tqdm_ray",                      # Ray Data's tqdm swaps builtins.print
    "ray.train.v2._internal.logging.patch_print",     # Ray Train workers
    "ray.serve._private.logging_utils",               # Ray Serve replicas
})
"""Modules whose replacement of ``builtins.print`` sits between a ``print`` and the stream;
the code that called ``print`` is looked for above them."""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RATE = re.compile(r"\bETA\b|\d[\d.]*\s*[A-Za-z]*/s\b")
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


def shown(line: str, own: bool) -> Optional[str]:
    """Text of ``line`` to show on the terminal, or None to keep it in the log only.

    ``own``: the line was written by ecglm's code in this process (a ``print`` in an
    :data:`OWN_MODULES` module), not by a library or by Ray forwarding a worker's output.
    Shown: ecglm's own lines as they are, and a worker's progress lines without Ray's prefix.
    """
    who, message = split_worker_prefix(line)
    if who is not None:
        return message if is_progress(message) else None
    return line if own else None


def _module_of(frame: FrameType) -> str:
    """Module name of the code running in ``frame`` (``python -m pkg.mod``: ``pkg.mod``)."""
    name = str(frame.f_globals.get("__name__", ""))
    spec = frame.f_globals.get("__spec__")
    return str(spec.name) if name == "__main__" and spec is not None else name


def loop_tag(message: str) -> Optional[str]:
    """The ``[tag]`` of a loop's progress line: a progress line with a rate or an ETA
    (``[train] step 3/20 ... 0.7 ex/s ETA 90s``); None for other lines (``[demo] counts``)."""
    if is_progress(message) and _RATE.search(message):
        return message.split(maxsplit=1)[0]
    return None


class LineFilter(io.TextIOBase):
    """A text stream that copies every complete line to ``log`` and passes to ``terminal`` the
    lines :func:`shown` keeps. A line is "own" when the code that wrote its first part lives
    in one of the ``own_modules``. Thread-safe; partial lines wait for their end (``\\r``
    progress-bar updates count as line ends).

    Consecutive progress lines with the same tag and a rate or ETA are one loop: on a terminal
    (``terminal.isatty()``) they overwrite each other, so each loop keeps one live line
    (rate, ETA); in a file or pipe they are thinned to one per :data:`PROGRESS_EVERY_S` plus
    the loop's last line.
    """

    def __init__(self, terminal: TextIO, log: TextIO,
                 own_modules: tuple[str, ...] = OWN_MODULES) -> None:
        super().__init__()
        self.terminal = terminal
        self.log = log
        self.own_modules = own_modules
        self._pending = ""
        self._pending_own = False
        self._lock = threading.Lock()
        self._live = bool(getattr(terminal, "isatty", lambda: False)())
        self._run_tag: Optional[str] = None
        self._shown_at = 0.0
        self._held: Optional[str] = None

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.terminal, "encoding", None) or "utf-8"

    def _caller_is_own(self) -> bool:
        """Whether the code calling :meth:`write` (through ``print`` or directly) is ours."""
        frame = sys._getframe(2)  # 0: here, 1: write, 2: the caller of write/print
        while frame is not None and _module_of(frame) in PRINT_WRAPPERS:
            frame = frame.f_back
        if frame is None:
            return False
        name = _module_of(frame)
        return name.split(".")[0] in self.own_modules or name in self.own_modules

    def write(self, text: str) -> int:
        own = self._caller_is_own()
        with self._lock:
            if not self._pending:
                self._pending_own = own
            lines = re.split(r"(?<=[\n\r])", self._pending + text)
            self._pending = lines.pop() if not lines[-1].endswith(("\n", "\r")) else ""
            for line in lines:
                if not line:
                    continue
                self.log.write(line)
                keep = shown(line.rstrip("\r\n"), self._pending_own)
                if keep is not None and line.endswith("\n"):
                    self._emit(keep)
                self._pending_own = own
        return len(text)

    def _emit(self, text: str) -> None:
        """Write one shown line. On a terminal a progress line stays open for the next update
        of its loop; elsewhere a loop's lines are thinned to one per :data:`PROGRESS_EVERY_S`
        (its last line always shown)."""
        tag = loop_tag(text)
        if self._live:
            if self._run_tag is not None:
                if tag == self._run_tag:
                    self.terminal.write("\r\x1b[2K" + text)
                    return
                self.terminal.write("\n")
            self.terminal.write(text if tag else text + "\n")
            self._run_tag = tag
            return
        now = time.monotonic()
        if tag is not None and tag == self._run_tag:
            if now - self._shown_at < PROGRESS_EVERY_S:
                self._held = text
                return
        else:
            self._release()
        self.terminal.write(text + "\n")
        self._run_tag, self._shown_at, self._held = tag, now, None

    def _release(self) -> None:
        """Show a loop's last progress line that was held back."""
        if self._held is not None:
            self.terminal.write(self._held + "\n")
            self._held = None

    def flush(self) -> None:
        with self._lock:
            self.log.flush()
            self.terminal.flush()

    def close_pending(self) -> None:
        """Write out a last line that never got its newline."""
        with self._lock:
            if self._pending:
                self.log.write(self._pending + "\n")
                self._pending = ""
            if self._live and self._run_tag is not None:
                self.terminal.write("\n")
            self._release()
            self._run_tag = None


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
def quiet_output(path: Optional[Path], verbose: bool = False,
                 own_modules: tuple[str, ...] = OWN_MODULES,
                 user_errors: tuple[type[BaseException], ...] = ()
                 ) -> Iterator[Optional[Path]]:
    """Run the body with ecglm's lines on the terminal and everything else in ``path``.

    ``verbose`` or ``path`` None: no change (yields None). ``own_modules``: whose prints are
    shown (see :class:`LineFilter`). On an exception the last :data:`TAIL_LINES` lines of the
    log are printed to stderr before it propagates, except for ``user_errors`` (a bad config
    or path, which the caller reports in one line).
    """
    if verbose or path is None:
        yield None
        return
    out, err = sys.stdout, sys.stderr
    with path.open("a", buffering=1, encoding="utf-8", errors="replace") as log:
        f_out, f_err = LineFilter(out, log, own_modules), LineFilter(err, log, own_modules)
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
            if not isinstance(exc, (KeyboardInterrupt, SystemExit, *user_errors)):
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
