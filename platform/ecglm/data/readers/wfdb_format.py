"""WFDB records (every signal format wfdb-python reads, incl. the PhysioNet/CinC 2020/2021
``header + .mat`` layout) as :class:`RawECG` in millivolts.

Before wfdb reads the samples the header and signal files are checked, so that a truncated,
empty or signal-count-mismatched file gives a :class:`RecordError` naming the record, the file
and the expected size instead of a bare ``IndexError``/``ValueError`` from deep inside wfdb.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import wfdb
from wfdb.io._signal import BYTES_PER_SAMPLE
from wfdb.io.header import rx_record, rx_signal

from ecglm.data.canonical import RawECG
from ecglm.data.errors import RecordError
from ecglm.data.normalize import canonical_lead
from ecglm.data.readers.files import require_file
from ecglm.data.readers.header_checks import (
    DEFAULT_LIMITS,
    HeaderLimits,
    check_length,
    check_record_line,
)

_UNIT_TO_MV: dict[str, float] = {
    "uv": 1e-3,
    "\u00b5v": 1e-3,  # micro sign
    "\u03bcv": 1e-3,  # greek mu
    "mv": 1.0,
    "v": 1e3,
}
_FIELD_RE = re.compile(r"<?([A-Za-z][A-Za-z _]*?)>?:\s*([^<]*)")


def unit_scale_to_mv(unit: str | None, record: str, lead: str) -> float:
    """Factor that converts values in ``unit`` (uV, mV, V; case-insensitive) to mV.

    Raises:
        RecordError: the unit is missing or not a voltage unit.
    """
    key = (unit or "").strip().lower()
    if key not in _UNIT_TO_MV:
        raise RecordError(record, "units",
                          f"lead {lead} has unit {unit!r}, expected one of uV, mV, V")
    return _UNIT_TO_MV[key]


def _header_text(path: str | Path) -> str:
    raw = Path(str(path) + ".hea").read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def header_units(path: str | Path, n_sig: int) -> list[str | None]:
    """Units of each signal as written in ``path``.hea (``None`` where none is given).

    wfdb drops non-ASCII characters from units (``µV`` becomes ``V``), so the header text is
    parsed here (UTF-8, else Latin-1).
    """
    lines = [ln for ln in _header_text(path).splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    units: list[str | None] = []
    for line in lines[1:1 + n_sig]:
        tokens = line.split()
        gain = tokens[2] if len(tokens) > 2 else ""
        units.append(gain.split("/", 1)[1] if "/" in gain else None)
    return units if len(units) == n_sig else [None] * n_sig


def parse_comments(comments: list[str]) -> dict[str, Any]:
    """Header comments -> metadata.

    Understands ``Age: 78`` / ``<age>: 51`` / ``age: 81``, ``Sex: Male`` / ``<sex>: F`` and the
    CinC ``Dx: 164889003,59118001`` SNOMED-CT codes (several ``key: value`` pairs may share a
    line). Returns ``{"age": int | None, "sex": "M" | "F" | None, "dx": [str, ...],
    "header_fields": {key: value}, "comments": [...]}``.
    """
    fields: dict[str, str] = {}
    for line in comments:
        for key, value in _FIELD_RE.findall(line):
            fields.setdefault(key.strip().lower(), value.strip())
    age_text = fields.get("age", "")
    age = int(age_text) if age_text.isdigit() else None
    sex_text = fields.get("sex", "").strip().lower()
    sex = {"m": "M", "male": "M", "f": "F", "female": "F"}.get(sex_text)
    dx = [c.strip() for c in fields.get("dx", "").split(",") if c.strip()]
    return {"age": age, "sex": sex, "dx": dx, "header_fields": fields,
            "comments": list(comments)}


@dataclass
class Header:
    """The fields of a single-segment WFDB header this reader needs (names as in wfdb)."""

    n_sig: int
    fs: float
    sig_len: int | None
    file_name: list[str] = field(default_factory=list)
    fmt: list[str] = field(default_factory=list)
    samps_per_frame: list[int] = field(default_factory=list)
    skew: list[int | None] = field(default_factory=list)
    byte_offset: list[int | None] = field(default_factory=list)
    adc_gain: list[float] = field(default_factory=list)
    baseline: list[int] = field(default_factory=list)
    sig_name: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)


def parse_header(record: str) -> Header | None:
    """Parse ``record``.hea with wfdb's own line grammar (``wfdb.io.header.rx_record`` /
    ``rx_signal``) and its defaults (gain 0 or absent -> 200, baseline -> ADC zero -> 0, fs
    absent -> 250 Hz), without wfdb's pandas-based parser (~7 ms per header).

    Returns ``None`` for multi-segment records or lines the grammar does not match (the caller
    then lets wfdb parse the header and report the problem).
    """
    text = _header_text(record)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    body = [ln for ln in lines if not ln.lstrip().startswith("#")]
    comments = [ln.lstrip()[1:].strip() for ln in lines if ln.lstrip().startswith("#")]
    rec = rx_record.match(body[0]) if body else None
    if rec is None or rec.group("n_seg"):
        return None
    n_sig = int(rec.group("n_sig"))
    hdr = Header(n_sig=n_sig, fs=float(rec.group("fs") or 250.0),
                 sig_len=int(rec.group("sig_len")) if rec.group("sig_len") else None,
                 comments=comments)
    for line in body[1:1 + n_sig]:
        m = rx_signal.match(line)
        if m is None or not m.group("file_name"):
            return None
        g = m.groupdict()
        gain = float(g["adc_gain"]) if g["adc_gain"] else 200.0
        hdr.file_name.append(g["file_name"])
        hdr.fmt.append(g["fmt"])
        hdr.samps_per_frame.append(int(g["samps_per_frame"] or 1))
        hdr.skew.append(int(g["skew"]) if g["skew"] else None)
        hdr.byte_offset.append(int(g["byte_offset"]) if g["byte_offset"] else None)
        hdr.adc_gain.append(gain if gain != 0 else 200.0)
        hdr.baseline.append(int(g["baseline"]) if g["baseline"]
                            else int(g["adc_zero"]) if g["adc_zero"] else 0)
        hdr.sig_name.append((g["sig_name"] or "").strip())
    return hdr if len(hdr.file_name) == n_sig else None


def _fast_signal(record: str, hdr: Header) -> np.ndarray | None:
    """``(sig_len, n_sig)`` float64 physical values for all-format-16 records without skew or
    multiple samples per frame (the common ECG case); ``None`` when another format needs wfdb.
    Invalid samples (-32768) become NaN, as in wfdb."""
    if (not hdr.sig_len or any(f != "16" for f in hdr.fmt)
            or any(s != 1 for s in hdr.samps_per_frame) or any(hdr.skew)):
        return None
    out = np.empty((hdr.sig_len, hdr.n_sig), dtype=np.float64)
    files: dict[str, list[int]] = {}
    for i, name in enumerate(hdr.file_name):
        files.setdefault(name, []).append(i)
    for name, chans in files.items():
        raw = np.fromfile(Path(record).parent / name, dtype="<i2",
                          count=hdr.sig_len * len(chans), offset=hdr.byte_offset[chans[0]] or 0)
        if raw.size != hdr.sig_len * len(chans):
            return None
        d = raw.reshape(hdr.sig_len, len(chans))
        for k, ch in enumerate(chans):
            col = d[:, k]
            phys = (col.astype(np.float64) - hdr.baseline[ch]) / hdr.adc_gain[ch]
            phys[col == -32768] = np.nan
            out[:, ch] = phys
    return out


def _check_header(record: str, hea: Path, limits: HeaderLimits) -> None:
    """The header file is readable and not empty, its record line plausible
    (:func:`check_record_line`) and, for a single-segment record, it lists as many signal
    lines as the record line declares."""
    if require_file(record, hea) == 0:
        raise RecordError(record, "header", f"empty header file {hea} (0 bytes)")
    lines = [ln for ln in _header_text(record).splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise RecordError(record, "header", f"header file {hea} has only comments, expected a "
                                            f"record line 'NAME N_SIG [FS [SIG_LEN]]'")
    check_record_line(record, lines[0], limits)
    first = lines[0].split()
    if "/" in first[0]:
        return  # a multi-segment record: wfdb validates the segment lines
    n_sig = int(first[1])
    if len(lines) - 1 < n_sig:
        raise RecordError(record, "header", f"signal-count mismatch: record line declares "
                                            f"{n_sig} signals, header lists {len(lines) - 1}")


def _check_signal_files(record: str, header: Any, limits: HeaderLimits) -> None:
    """Each signal file is readable (:func:`require_file`) and its size matches what the header
    declares; without a declared ``sig_len`` the length the file implies must be within
    ``limits``."""
    base = Path(record).parent
    files: dict[str, list[int]] = {}
    for i, name in enumerate(header.file_name or []):
        files.setdefault(name, []).append(i)
    sig_len = int(header.sig_len or 0)
    for name, chans in files.items():
        path = base / name
        size = require_file(record, path)
        if size == 0:
            raise RecordError(record, "file", f"empty signal file {path} (0 bytes; "
                                              f"truncated or corrupt?)")
        fmt = str(header.fmt[chans[0]])
        bps = BYTES_PER_SAMPLE.get(fmt, 0)
        if not bps or any(str(header.fmt[c]) != fmt for c in chans):
            continue
        offset = int(header.byte_offset[chans[0]] or 0)
        spf = sum(int(header.samps_per_frame[c] or 1) for c in chans)
        if not sig_len:  # the file defines the length: it must be plausible too
            implied = int((size - offset) / (spf * bps))
            check_length(record, implied, float(header.fs or 250.0), limits,
                         f"no sig_len in the header; {path.name} holds {implied}")
            continue
        expected = offset + math.ceil(spf * sig_len * bps)
        if size == expected:
            continue
        held = (size - offset) / (sig_len * bps)
        fits = held > 0 and held == int(held) and len(chans) == spf
        if size < expected:
            hint = (f"; the size fits {int(held)} signals: signal-count mismatch?"
                    if fits else "")
            raise RecordError(record, "file", f"signal file {path} has {size} bytes, header "
                                              f"declares {len(chans)} signals x {sig_len} "
                                              f"samples = {expected} bytes (truncated or "
                                              f"corrupt?{hint})")
        if fits:
            raise RecordError(record, "signal", f"signal-count mismatch: {path.name} holds "
                                                f"{int(held)} signals x {sig_len} samples, "
                                                f"header declares {len(chans)}")


def read_wfdb_raw(path: str | Path, limits: HeaderLimits = DEFAULT_LIMITS) -> RawECG:
    """Read WFDB record ``path`` (no extension) as :class:`RawECG`.

    Signals are converted to mV from the header units (uV/mV/V, case-insensitive, ``µV``
    included); channels whose name is not one of the 12 leads keep their stored values.
    Header comments become metadata (:func:`parse_comments`).

    ``limits`` bound what the header may declare (:class:`HeaderLimits`: sample count,
    duration, sampling frequency).

    Raises:
        RecordError: missing/empty/truncated files (``file``), dangling symlinks
            (``symlink``), unreadable files (``permission``), a malformed header or
            signal-count mismatch (``header``/``signal``), an implausible record line
            (``header.n_sig``/``header.fs``/``header.sig_len``), unknown units of a lead
            (``units``).
    """
    record = str(path)
    _check_header(record, Path(record + ".hea"), limits)
    hdr = parse_header(record)
    if hdr is not None:
        _check_signal_files(record, hdr, limits)
        sig = _fast_signal(record, hdr)
        if sig is not None:
            return _to_raw(record, sig, hdr.sig_name, hdr.fs, [None] * hdr.n_sig,
                           hdr.comments)
    try:
        header = wfdb.rdheader(record)
    except Exception as exc:  # wfdb raises bare ValueError/IndexError on bad headers
        raise RecordError(record, "header", f"unreadable WFDB header: {type(exc).__name__}: "
                                            f"{exc}") from exc
    if not getattr(header, "n_seg", None):  # multi-segment records: wfdb checks segments
        _check_signal_files(record, header, limits)
    try:
        rec = wfdb.rdrecord(record, physical=True)
    except FileNotFoundError as exc:
        raise RecordError(record, "file", f"missing file {exc.filename or exc}") from exc
    except Exception as exc:  # corrupt content that passed the size checks
        raise RecordError(record, "file", f"unreadable WFDB record (truncated or corrupt?): "
                                          f"{type(exc).__name__}: {exc}") from exc
    sig = rec.p_signal
    if sig is None or sig.ndim != 2 or sig.shape[0] == 0:
        raise RecordError(record, "signal", "empty signal (0 samples)")
    if rec.sig_len and sig.shape[0] != rec.sig_len:
        raise RecordError(record, "signal",
                          f"header declares {rec.sig_len} samples, file holds {sig.shape[0]}")
    return _to_raw(record, sig, [str(n) for n in (rec.sig_name or [])], float(rec.fs or 0.0),
                   list(rec.units or []), list(rec.comments or []))


def _to_raw(record: str, sig: np.ndarray, names: list[str], fs: float,
            parsed_units: list[str | None], comments: list[str]) -> RawECG:
    """Scale ``sig`` ``(T, n_sig)`` to mV per the header units and wrap it as :class:`RawECG`."""
    raw_units = header_units(record, len(names))
    parsed = parsed_units if len(parsed_units) == len(names) else [None] * len(names)
    units = [raw or p or "mV" for raw, p in zip(raw_units, parsed)]
    scales = np.ones(len(names))
    for i, name in enumerate(names):
        if canonical_lead(name) is not None:
            scales[i] = unit_scale_to_mv(units[i], record, name)
    meta = parse_comments(comments)
    meta["units"] = [str(u) for u in units]
    meta["format"] = "wfdb"
    return RawECG(record_id=record, signal=sig.T * scales[:, None], lead_names=names, fs=fs,
                  metadata=meta)
