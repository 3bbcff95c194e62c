"""ECG upload formats besides the JSON body (pure functions, no Ray, no web framework).

Each reader returns ``(x, fs)``: ``x`` float64 ``(12, T)`` mV in lead order
I II III aVR aVL aVF V1..V6 (:data:`~ecglm.data.canonical.LEADS`), ``fs`` in Hz. The caller
passes them, with the task's fields, to :func:`ecglm.serving.validation.validate_signal_request`
and the field names of the form (:data:`WFDB_FIELDS`, :data:`RAW_FIELDS`), so an uploaded
ECG is checked and preprocessed exactly like the same ECG sent as JSON lists: identical
``ECGRequest.signal``. Every failure is a :class:`~ecglm.tasks.RequestError` naming the field
(400: cannot be parsed, 413: too large, 422: parsed but not acceptable).

WFDB record upload (:func:`signal_from_wfdb`)
    Exactly one header ``<record>.hea`` and the signal file(s) it names (PTB-XL: one
    ``<record>.dat``, format 16), each uploaded under the name the header gives it (no
    folders). Any WFDB signal format, gain, baseline and unit (uV/mV/V) the repository's reader
    (:func:`ecglm.data.readers.read_raw`) accepts; channels are matched to the 12 leads by name
    as the training records are (``AVR``/``aVR``/``Lead aVR``/``DII`` ...; extra channels are
    ignored); invalid samples (format 16 value -32768) become NaN and are rejected. Error
    fields: ``hea`` (the header: malformed, implausible, missing leads, unknown units, rate
    or duration outside the serve limits) and ``dat`` (the signal files: missing, extra,
    unsafe name, truncated or corrupt, non-finite samples).

Raw samples upload (:func:`signal_from_raw`)
    The body is the samples, little-endian, lead-major (all of lead I, then lead II ...),
    no header or padding; the request headers (case-insensitive) describe them:

    ======================  ==============================================================
    header                  value
    ======================  ==============================================================
    ``X-ECG-Dtype``         ``int16`` or ``float32`` (required)
    ``X-ECG-Shape``         ``12,T``: leads (must be 12), samples per lead (required)
    ``X-ECG-FS``            sampling rate in Hz (required)
    ``X-ECG-Units-Per-MV``  stored units per millivolt, ``> 0`` (optional; default int16:
                            1000, i.e. microvolts; float32: 1, i.e. millivolts)
    ======================  ==============================================================

    The body must hold exactly ``12 * T * itemsize`` bytes (int16: 2, float32: 4). Values are
    divided by the units per mV; int16 -32768 is an ordinary value (-32.768 mV at the default
    scale). The task's fields travel as query parameters (:func:`task_fields_from_query`).
    Error fields: the header at fault (``X-ECG-Dtype``; ``X-ECG-Shape``, also for a body of
    the wrong length or a duration outside the serve limits; ``X-ECG-FS``, also for a rate
    outside them; ``X-ECG-Units-Per-MV``) and ``body`` for non-finite samples.

Examples (curl; any ``/v1/<route>``, told apart by ``Content-Type``)::

    curl -H "Authorization: Bearer $TOKEN" -F hea=@00001_hr.hea -F dat=@00001_hr.dat \
         -F question="Does this ECG show noise?" http://127.0.0.1:8000/v1/answer
    curl -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/octet-stream" \
         -H "X-ECG-Dtype: int16" -H "X-ECG-Shape: 12,5000" -H "X-ECG-FS: 500" \
         --data-binary @ecg.i16 \
         "http://127.0.0.1:8000/v1/answer?question=Does+this+ECG+show+noise%3F"
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Collection, Mapping

import numpy as np
from wfdb.io.header import rx_record

from ecglm.data.canonical import LEADS
from ecglm.data.errors import RecordError
from ecglm.data.normalize import match_leads
from ecglm.data.readers import DEFAULT_LIMITS, read_raw
from ecglm.data.readers.header_checks import check_record_line
from ecglm.data.readers.wfdb_format import parse_header
from ecglm.serving.validation import SignalFields, check_body_size
from ecglm.tasks import RequestError

# ------------------------------------------------------------------------------------------------
# field names
# ------------------------------------------------------------------------------------------------

HEA_FIELD = "hea"
"""Error field of the uploaded WFDB header."""
DAT_FIELD = "dat"
"""Error field of the uploaded WFDB signal file(s) (``.dat``, or what the header names)."""
DTYPE_HEADER = "X-ECG-Dtype"
"""Raw upload: sample type, one of :data:`RAW_DTYPES`."""
SHAPE_HEADER = "X-ECG-Shape"
"""Raw upload: ``leads,samples`` (leads must be 12), lead-major."""
FS_HEADER = "X-ECG-FS"
"""Raw upload: sampling rate in Hz."""
UNITS_HEADER = "X-ECG-Units-Per-MV"
"""Raw upload: stored units per millivolt (default per dtype, :data:`RAW_DTYPES`)."""
RAW_DTYPES: Mapping[str, tuple[str, float]] = {"int16": ("<i2", 1000.0),
                                               "float32": ("<f4", 1.0)}
"""Raw upload dtypes: ``name -> (numpy little-endian dtype, default units per mV)``."""
LIST_QUERY_FIELDS = frozenset({"options"})
"""Query parameters that carry a list: repeated (``options=yes&options=no``) or one JSON array
(``options=["yes","no"]``)."""

WFDB_FIELDS = SignalFields(samples=DAT_FIELD, fs=HEA_FIELD, duration=HEA_FIELD)
"""What :func:`~ecglm.serving.validation.validate_signal_request` names for a WFDB upload."""
RAW_FIELDS = SignalFields(samples="body", fs=FS_HEADER, duration=SHAPE_HEADER)
"""What :func:`~ecglm.serving.validation.validate_signal_request` names for a raw upload."""

_SAFE_NAME = re.compile(r"[A-Za-z0-9_~+-][A-Za-z0-9_.~+-]*")
"""A plain file name: no folder separators, no leading dot (``.``/``..``/hidden files)."""
_DIGITS = re.compile(r"[0-9]+")
_HEADER_STATUS: Mapping[str, tuple[int, str]] = {
    "header": (400, HEA_FIELD),
    "header.n_sig": (422, HEA_FIELD),
    "header.fs": (422, HEA_FIELD),
    "header.sig_len": (422, HEA_FIELD),
    "units": (422, HEA_FIELD),
}
"""Status and error field of a reader :class:`RecordError` by its field; anything else is a
signal file that cannot be read (400 ``dat``)."""


# ------------------------------------------------------------------------------------------------
# WFDB upload
# ------------------------------------------------------------------------------------------------

def _field_of(name: str) -> str:
    """The error field of an uploaded file: ``hea`` for a header, else ``dat``."""
    return HEA_FIELD if str(name).lower().endswith(".hea") else DAT_FIELD


def _check_name(name: str, field: str, what: str) -> None:
    """``name`` is a plain file name (:data:`_SAFE_NAME`, no ``..``), else 422 on ``field``."""
    if not (isinstance(name, str) and _SAFE_NAME.fullmatch(name) and ".." not in name
            and len(name) <= 255):
        raise RequestError(422, field, f"{what} {name!r}: expected a plain file name (letters, "
                                       f"digits, '_', '-', '.', no folders, no '..')")


def _header_text(data: bytes) -> str:
    """The header as text: UTF-8, else Latin-1 (as the reader decodes it)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _record_name(hea: bytes) -> str:
    """The record name on the record line of the header bytes ``hea``, after the record line's
    plausibility checks (:func:`check_record_line`).

    Raises:
        RequestError: 400 ``hea`` without a parsable record line, 422 ``hea`` for a
            multi-segment record or implausible counts/rate.
    """
    lines = [ln for ln in _header_text(hea).splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise RequestError(400, HEA_FIELD, "header has no record line, expected "
                                           "'NAME N_SIG FS SIG_LEN'")
    match = rx_record.match(lines[0])
    if match is None or not match.group("record_name"):
        raise RequestError(400, HEA_FIELD, f"record line {lines[0].strip()[:80]!r} is not "
                                           f"'NAME N_SIG FS SIG_LEN'")
    if match.group("n_seg") or "/" in lines[0].split()[0]:
        raise RequestError(422, HEA_FIELD, "multi-segment records are not accepted: upload a "
                                           "single-segment record (one .hea and its .dat)")
    name = match.group("record_name")
    try:
        check_record_line(name, lines[0], DEFAULT_LIMITS)
    except RecordError as err:
        raise RequestError(422, HEA_FIELD, err.reason) from None
    _check_name(name + ".hea", HEA_FIELD, "record name")
    return name


def _signal_lines_problem(hea: bytes) -> str:
    """Why the signal lines of a header whose record line passed do not parse."""
    lines = [ln for ln in _header_text(hea).splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    declared = int(lines[0].split()[1])
    if len(lines) - 1 < declared:
        return (f"signal-count mismatch: the record line declares {declared} signals, the "
                f"header lists {len(lines) - 1} signal lines")
    return ("malformed signal line(s): expected 'FILE FORMAT GAIN(BASELINE)/UNITS ... NAME' "
            "per signal, FILE a plain file name")


def _split_upload(files: Mapping[str, bytes]) -> tuple[bytes, dict[str, bytes]]:
    """``(header bytes, {signal file name: bytes})``: exactly one ``.hea``, safe names."""
    for name in files:
        _check_name(name, _field_of(name), "uploaded file")
    headers = sorted(n for n in files if n.lower().endswith(".hea"))
    if len(headers) != 1:
        got = f"{len(headers)} ({', '.join(headers)})" if headers else "none"
        raise RequestError(422, HEA_FIELD, f"expected exactly one WFDB header (.hea), got {got}")
    return files[headers[0]], {n: b for n, b in files.items() if n != headers[0]}


def _record_error(err: RecordError, folder: str) -> RequestError:
    """A reader error as a request error, the temporary folder cut from the message."""
    status, field = _HEADER_STATUS.get(err.field, (400, DAT_FIELD))
    reason = err.reason.replace(folder + os.sep, "").replace(folder, "")
    return RequestError(status, field, reason)


def signal_from_wfdb(files: Mapping[str, bytes], max_bytes: int) -> tuple[np.ndarray, float]:
    """The 12-lead ECG of an uploaded WFDB record.

    Args:
        files: ``{file name: content}``: one ``<record>.hea`` and exactly the signal files its
            signal lines name (same names; the header's own name may differ from its record
            name). Names must be plain (no folders, no ``..``).
        max_bytes: most bytes all files may hold together (``serve.max_body_bytes``).

    The files are written, under the names the header gives, into a fresh private temporary
    folder (removed on return, whatever happens) and read with
    :func:`ecglm.data.readers.read_raw`; channels are mapped to the 12 leads with
    :func:`ecglm.data.normalize.match_leads`, the matcher of the training records.

    Returns:
        ``(x, fs)``: ``x`` float64 ``(12, T)`` mV in :data:`LEADS` order (NaN where the file
        marks invalid samples), ``fs`` the header's rate in Hz.

    Raises:
        RequestError: 413 ``body`` over ``max_bytes``; 400 ``hea`` for an unparsable header,
            422 ``hea`` for an implausible or multi-segment header, unknown units or missing
            leads (named); 422 ``dat`` for missing, extra or unsafely named signal files,
            400 ``dat`` for truncated or corrupt ones.
    """
    check_body_size(sum(len(b) for b in files.values()), max_bytes)
    hea, data_files = _split_upload(files)
    name = _record_name(hea)
    with tempfile.TemporaryDirectory(prefix="ecglm-upload-") as folder:
        base = Path(folder) / name
        (base.parent / f"{name}.hea").write_bytes(hea)
        try:
            header = parse_header(str(base))
        except ValueError:  # a number the line grammar lets through but float() refuses
            header = None
        if header is None:
            raise RequestError(400, HEA_FIELD, _signal_lines_problem(hea))
        named = list(dict.fromkeys(header.file_name))
        for ref in named:
            _check_name(ref, HEA_FIELD, "signal file named by the header")
        missing = [ref for ref in named if ref not in data_files]
        if missing:
            raise RequestError(422, DAT_FIELD, f"missing signal file(s) {missing} named by the "
                                               f"header; uploaded {sorted(data_files)}")
        extra = sorted(set(data_files) - set(named))
        if extra:
            raise RequestError(422, DAT_FIELD, f"file(s) {extra} are not named by the header "
                                               f"(it names {named})")
        for ref in named:
            with open(base.parent / ref, "xb") as out:
                out.write(data_files[ref])
        try:
            raw = read_raw(base)
        except RecordError as err:
            raise _record_error(err, folder) from None
        except Exception as exc:  # corrupt content wfdb trips over: never a 500
            raise RequestError(400, DAT_FIELD, f"unreadable WFDB record: "
                                               f"{type(exc).__name__}") from None
    present, _ = match_leads(raw.lead_names)
    lost = [lead for lead in LEADS if lead not in present]
    if lost:
        raise RequestError(422, HEA_FIELD, f"missing lead(s) {', '.join(lost)}; the header "
                                           f"names {list(raw.lead_names)}")
    x = np.asarray(raw.signal[[present[lead] for lead in LEADS]], dtype=np.float64)
    return x, float(raw.fs)


# ------------------------------------------------------------------------------------------------
# raw samples
# ------------------------------------------------------------------------------------------------

def _positive_number(text: str, header: str, unit: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RequestError(422, header, f"{text!r} is not a number ({unit})") from None
    if not (math.isfinite(value) and value > 0):
        raise RequestError(422, header, f"{text!r}: expected a finite number > 0 ({unit})")
    return value


def _shape(text: str) -> int:
    """Samples per lead from ``12,T``."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(_DIGITS.fullmatch(p) for p in parts):
        raise RequestError(422, SHAPE_HEADER, f"{text!r}: expected 'LEADS,SAMPLES' such as "
                                              f"'12,5000'")
    leads, samples = int(parts[0]), int(parts[1])
    if leads != len(LEADS):
        raise RequestError(422, SHAPE_HEADER, f"{leads} leads: expected 12 "
                                              f"({' '.join(LEADS)}), e.g. '12,5000'")
    if samples == 0:
        raise RequestError(422, SHAPE_HEADER, "0 samples per lead, expected > 0")
    return samples


def signal_from_raw(body: bytes, headers: Mapping[str, str]) -> tuple[np.ndarray, float]:
    """The 12-lead ECG of a raw samples upload (format in the module docstring).

    Args:
        body: ``12 * T`` little-endian samples, lead-major, in :data:`LEADS` order.
        headers: the request headers (names case-insensitive): :data:`DTYPE_HEADER`,
            :data:`SHAPE_HEADER`, :data:`FS_HEADER`, optional :data:`UNITS_HEADER`.

    Returns:
        ``(x, fs)``: ``x`` float64 ``(12, T)`` mV (stored values / units per mV; not yet
        checked for finiteness), ``fs`` in Hz (range checked later).

    Raises:
        RequestError: 422 naming the header: missing or invalid value, or (on
            ``X-ECG-Shape``) a body whose length is not ``12 * T * itemsize``.
    """
    lower = {str(k).lower(): str(v) for k, v in headers.items()}

    def get(name: str) -> str | None:
        value = lower.get(name.lower())
        return None if value is None else value.strip()

    for required in (DTYPE_HEADER, SHAPE_HEADER, FS_HEADER):
        if not get(required):
            raise RequestError(422, required, f"missing header {required}")
    dtype_name = str(get(DTYPE_HEADER)).lower()
    if dtype_name not in RAW_DTYPES:
        raise RequestError(422, DTYPE_HEADER, f"{get(DTYPE_HEADER)!r}: expected one of "
                                              f"{sorted(RAW_DTYPES)}")
    np_dtype, default_units = RAW_DTYPES[dtype_name]
    samples = _shape(str(get(SHAPE_HEADER)))
    fs = _positive_number(str(get(FS_HEADER)), FS_HEADER, "Hz")
    units_text = get(UNITS_HEADER)
    units = (_positive_number(units_text, UNITS_HEADER, "stored units per mV")
             if units_text else default_units)
    itemsize = np.dtype(np_dtype).itemsize
    expected = len(LEADS) * samples * itemsize
    if len(body) != expected:
        raise RequestError(422, SHAPE_HEADER, f"body has {len(body)} bytes, {SHAPE_HEADER} "
                                              f"{len(LEADS)},{samples} of {dtype_name} needs "
                                              f"{len(LEADS)} x {samples} x {itemsize} = "
                                              f"{expected} bytes")
    stored = np.frombuffer(body, dtype=np_dtype).reshape(len(LEADS), samples)
    x = stored.astype(np.float64)
    if units != 1.0:
        x /= units
    return x, fs


# ------------------------------------------------------------------------------------------------
# task fields of a raw upload
# ------------------------------------------------------------------------------------------------

def _values(params: Any, key: str) -> list[str]:
    """All values of ``key`` in a multi-dict (``getlist``) or ``{key: [values]}`` mapping."""
    if hasattr(params, "getlist"):
        return [str(v) for v in params.getlist(key)]
    value = params[key]
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def task_fields_from_query(params: Any, task_request_fields: Collection[str]) -> dict[str, Any]:
    """The task's fields of a raw upload from its query parameters.

    Args:
        params: ``{name: [values]}`` (``urllib.parse.parse_qs``) or a multi-dict with
            ``getlist`` (Starlette's ``request.query_params``).
        task_request_fields: the fields the task takes
            (:attr:`ecglm.tasks.base.Task.request_fields`).

    A list field (:data:`LIST_QUERY_FIELDS`: ``options``) is the repeated values
    (``options=yes&options=no``) or one JSON array (``options=["yes","no"]``); a single
    value that does not start with ``[`` is a one-item list. Any other field (``question``) is
    one string. The values are validated afterwards by the task
    (:func:`~ecglm.serving.validation.validate_signal_request`).

    Raises:
        RequestError: 422 naming the parameter: not a field of the task, a string field given
            more than once, or a list field whose JSON array does not parse.
    """
    allowed = set(task_request_fields)
    out: dict[str, Any] = {}
    for key in params.keys():
        if key not in allowed:
            raise RequestError(422, key, f"unknown query parameter {key!r}; allowed: "
                                         f"{sorted(allowed)}")
        values = _values(params, key)
        if key in LIST_QUERY_FIELDS:
            if len(values) == 1 and values[0].lstrip().startswith("["):
                try:
                    out[key] = json.loads(values[0])
                except json.JSONDecodeError as exc:
                    raise RequestError(422, key, f"not a JSON array: {exc.msg} at column "
                                                 f"{exc.colno}") from None
            else:
                out[key] = values
        elif len(values) == 1:
            out[key] = values[0]
        else:
            raise RequestError(422, key, f"given {len(values)} times, expected once")
    return out
