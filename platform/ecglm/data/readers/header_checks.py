"""Plausibility of a WFDB header's record line (``name[/n_seg] n_sig [fs[/counter[(base)]]]
[sig_len] [base_time] [base_date]``), checked before anything is read.

wfdb's own grammar (``wfdb.io.header.rx_record``) silently reads ``500 -5`` as "500 Hz, no
sample count" and then takes the length from the signal file, so a header with a negative,
zero or absurd sample count or sampling frequency would otherwise be accepted. Each rejection
is a :class:`RecordError` whose field names the header field (``header.n_sig``,
``header.fs``, ``header.sig_len``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ecglm.data.errors import RecordError

_INT = re.compile(r"^\d+$")


@dataclass(frozen=True)
class HeaderLimits:
    """What a header may declare (any reader of WFDB records applies them).

    Defaults: recordings up to 24 h (Holter) at 10 Hz - 50 kHz; nothing real is rejected
    (ECG is recorded at 50 Hz - 10 kHz).
    """

    max_seconds: float = 24 * 3600.0
    """Longest plausible recording, seconds: ``sig_len / fs`` above it is rejected."""
    min_fs_hz: float = 10.0
    """Lowest plausible sampling frequency, Hz."""
    max_fs_hz: float = 50_000.0
    """Highest plausible sampling frequency, Hz."""

    def __post_init__(self) -> None:
        if not (self.max_seconds > 0 and math.isfinite(self.max_seconds)):
            raise ValueError(f"HeaderLimits.max_seconds={self.max_seconds}: expected a finite "
                             f"number of seconds > 0")
        if not (0 < self.min_fs_hz < self.max_fs_hz and math.isfinite(self.max_fs_hz)):
            raise ValueError(f"HeaderLimits fs range [{self.min_fs_hz}, {self.max_fs_hz}] Hz: "
                             f"expected 0 < min_fs_hz < max_fs_hz < inf")


DEFAULT_LIMITS = HeaderLimits()
"""The limits readers apply unless told otherwise (immutable)."""


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.4g} h"


def check_fs(record: str, fs: float, limits: HeaderLimits, source: str) -> None:
    """Reject a sampling frequency ``fs`` (Hz) outside ``limits``; ``source`` says where it was
    declared (named in the reason)."""
    if not (math.isfinite(fs) and fs > 0):
        raise RecordError(record, "header.fs", f"sampling frequency {fs:g} Hz ({source}), "
                                               f"expected > 0 Hz")
    if not limits.min_fs_hz <= fs <= limits.max_fs_hz:
        raise RecordError(record, "header.fs", f"sampling frequency {fs:g} Hz ({source}) is "
                                               f"outside the plausible range "
                                               f"[{limits.min_fs_hz:g}, {limits.max_fs_hz:g}] Hz")


def check_length(record: str, n_samples: int, fs: float, limits: HeaderLimits,
                 source: str) -> None:
    """Reject ``n_samples`` per signal at ``fs`` Hz that is 0 or longer than
    ``limits.max_seconds``; ``source`` says where the count comes from."""
    if n_samples <= 0:
        raise RecordError(record, "header.sig_len", f"{n_samples} samples per signal "
                                                    f"({source}), expected > 0")
    seconds = n_samples / fs
    if seconds > limits.max_seconds:
        raise RecordError(record, "header.sig_len",
                          f"{n_samples} samples per signal at {fs:g} Hz ({source}) = "
                          f"{_hours(seconds)}, more than the maximum {_hours(limits.max_seconds)}"
                          f" (max_seconds={limits.max_seconds:g})")


def check_record_line(record: str, line: str, limits: HeaderLimits = DEFAULT_LIMITS) -> None:
    """Validate the record line of ``record``.hea: ``n_sig`` a whole number > 0, ``fs`` (when
    given; WFDB's default is 250 Hz) a number within ``limits``, ``sig_len`` (when given) a
    whole number > 0 with ``sig_len / fs <= limits.max_seconds``.

    Raises:
        RecordError: ``header.n_sig``, ``header.fs`` or ``header.sig_len`` with the value as
            written and what was expected.
    """
    tokens = line.split()
    if len(tokens) < 2:
        raise RecordError(record, "header.n_sig", f"record line {line.strip()!r} has no signal "
                                                  f"count, expected 'NAME N_SIG [FS [SIG_LEN]]'")
    n_sig = tokens[1]
    if not _INT.match(n_sig):
        raise RecordError(record, "header.n_sig", f"signal count {n_sig!r} on the record line "
                                                  f"is not a whole number >= 1")
    if int(n_sig) == 0:
        raise RecordError(record, "header.n_sig", "signal count 0 on the record line: the "
                                                  "record holds no signals, expected >= 1")
    fs = 250.0
    if len(tokens) > 2:
        fs_text = tokens[2].split("/", 1)[0]
        try:
            fs = float(fs_text)
        except ValueError:
            raise RecordError(record, "header.fs", f"sampling frequency {tokens[2]!r} on the "
                                                   f"record line is not a number (Hz)") from None
        check_fs(record, fs, limits, "record line")
    if len(tokens) > 3 and ":" not in tokens[3]:  # a ':' token is the base time: no sig_len
        sig_len = tokens[3]
        if not _INT.match(sig_len):
            raise RecordError(record, "header.sig_len", f"samples per signal {sig_len!r} on "
                                                        f"the record line is not a whole "
                                                        f"number >= 1")
        check_length(record, int(sig_len), fs, limits, "record line")
