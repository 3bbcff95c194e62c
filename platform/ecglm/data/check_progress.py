"""The progress line of ``ecglm data check``: files done/total, files/s, MB/s, ETA.

On a terminal the line is rewritten in place (``\\r``) at most :data:`LIVE_INTERVAL_S` apart;
elsewhere (``--progress`` into a file or pipe) one line is written at most every
:data:`LOG_INTERVAL_S`. The last state is always written when the check ends.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO

LIVE_INTERVAL_S = 0.25
"""Least time between two updates of a live (terminal) progress line, seconds."""
LOG_INTERVAL_S = 2.0
"""Least time between two progress lines written to a file or pipe, seconds."""


def format_eta(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``42s`` (``?`` when unknown)."""
    if seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class ProgressLine:
    """Counts files and bytes and writes ``[check] done/total files (pct%) R files/s M MB/s
    ETA t`` to ``stream``.

    Args:
        stream: where the line goes (stderr in the CLI).
        live: rewrite one line in place (a terminal) instead of writing new lines.
        interval_s: least time between two writes.
        clock: seconds, monotonic (injectable for tests).
    """

    def __init__(self, stream: TextIO, live: bool, interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.live = live
        self.interval_s = interval_s
        self.clock = clock
        self.total = 0
        self.done = 0
        self.n_bytes = 0
        self._base_done = 0
        self._t0 = clock()
        self._last = float("-inf")
        self._width = 0

    @classmethod
    def for_stream(cls, stream: Optional[TextIO], enabled: Optional[bool]
                   ) -> Optional["ProgressLine"]:
        """A progress line on ``stream`` (default stderr): ``enabled`` True always, False
        never, None only when the stream is a terminal."""
        out = stream if stream is not None else sys.stderr
        tty = bool(getattr(out, "isatty", lambda: False)())
        if enabled is False or (enabled is None and not tty):
            return None
        return cls(out, live=tty, interval_s=LIVE_INTERVAL_S if tty else LOG_INTERVAL_S)

    def start(self, total: int, done: int = 0) -> None:
        """Begin: ``total`` files, ``done`` of them already settled (found bad while listing;
        not counted in the rate)."""
        self.total, self.done, self._base_done = total, done, done
        self.n_bytes = 0
        self._t0 = self.clock()
        self._last = float("-inf")

    def render(self) -> str:
        """The current line (without ``\\r``/newline)."""
        elapsed = max(self.clock() - self._t0, 1e-9)
        rate = (self.done - self._base_done) / elapsed
        mb_s = self.n_bytes / 1e6 / elapsed
        left = self.total - self.done
        eta = left / rate if rate > 0 else (0.0 if left == 0 else float("inf"))
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (f"[check] {self.done}/{self.total} files ({pct:.1f}%) {rate:.1f} files/s "
                f"{mb_s:.2f} MB/s ETA {format_eta(eta)}")

    def note(self, text: str) -> None:
        """One ``[check] text`` line (e.g. what listing found), outside the live line."""
        self.stream.write(f"[check] {text}\n")
        self.stream.flush()

    def update(self, n: int, n_bytes: int) -> None:
        """``n`` more files done, ``n_bytes`` read; writes if ``interval_s`` has passed."""
        self.done += n
        self.n_bytes += n_bytes
        if self.clock() - self._last >= self.interval_s:
            self._write(final=False)

    def close(self) -> None:
        """Write the final state (and end the live line)."""
        self._write(final=True)

    def _write(self, final: bool) -> None:
        self._last = self.clock()
        text = self.render()
        if self.live:
            pad = " " * max(0, self._width - len(text))
            self._width = len(text)
            self.stream.write("\r" + text + pad + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
