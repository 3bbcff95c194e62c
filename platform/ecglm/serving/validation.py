"""Validate and normalise ``POST /`` request bodies (pure functions, no Ray).

Request JSON::

    {"ecg": [[...], ... 12 leads ...],   # lead order I II III aVR aVL aVF V1..V6, millivolts
     "fs": 500,                           # sampling rate of "ecg", Hz
     "question": "Does this ECG show ...?",
     "options": ["yes", "no", "not sure"]}   # optional for yes/no questions

Every rejection is a :class:`RequestError` carrying the HTTP status (400 malformed JSON, 413 body
too large, 422 well-formed but invalid) and the offending field; :func:`error_body` gives the
JSON the client sees. Accepted ECGs go through the training records' preprocessing
(:func:`ecglm.data.preprocess.preprocess`: ``data.normalize`` filters, resampling to ``data.fs``,
crop/pad to ``data.n_samples``).

Every input form shares one path: the JSON body (:func:`validate_request`) and the uploads of
:mod:`ecglm.serving.inputs` (a WFDB record, raw little-endian samples) each turn their ECG into
a ``(12, T)`` float64 mV array and a rate in Hz, then call :func:`validate_signal_request`,
which checks the rate, the duration, finiteness and the task's fields and preprocesses the ECG.
:class:`SignalFields` says which request field each of its errors names for that input form.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

from ecglm.config.schema import DataConfig, ServeConfig
from ecglm.data.canonical import LEADS
from ecglm.data.preprocess import preprocess
from ecglm.data.rows import ECGRow
from ecglm.tasks import RequestError, get_task

BASE_FIELDS = frozenset({"ecg", "fs"})
"""Fields every endpoint takes; a task adds its own
(:attr:`ecglm.tasks.base.Task.request_fields`)."""


@dataclass(frozen=True)
class ECGRequest:
    """A validated request, ECG already in the model's format."""

    signal: np.ndarray
    """``(12, data.n_samples)`` float32 mV at ``data.fs`` Hz, lead order :data:`LEADS`."""
    row: ECGRow
    """The task's fields as a row (:meth:`ecglm.tasks.base.Task.request_row`): the question
    and options for ``qa``, nothing for the generation tasks."""
    input_fs: float
    """Sampling rate of the ECG as sent, Hz."""
    input_samples: int
    """Samples per lead as sent."""


@dataclass(frozen=True)
class SignalFields:
    """The request field :func:`validate_signal_request` names in an error, per input form."""

    samples: str = "ecg"
    """Where the samples came from (non-finite values)."""
    fs: str = "fs"
    """Where the sampling rate came from (rate outside ``[serve.min_fs, serve.max_fs]``)."""
    duration: str = "ecg"
    """Where the sample count came from (duration outside
    ``[serve.min_seconds, serve.max_seconds]``)."""


JSON_FIELDS = SignalFields()
"""Field names of the JSON body: ``ecg`` and ``fs``."""


def error_body(err: RequestError) -> dict[str, str]:
    """JSON body of a 4xx response: ``{"error": message, "field": field}``."""
    return {"error": err.message, "field": err.field}


# ------------------------------------------------------------------------------------------------
# body
# ------------------------------------------------------------------------------------------------

def check_content_length(header: Optional[str], max_bytes: int) -> None:
    """Reject a declared ``Content-Length`` above ``max_bytes`` before any byte is read.

    Raises:
        RequestError: 400 when the header is not a non-negative integer, 413 when too large.
    """
    if header is None:
        return
    try:
        declared = int(header)
    except ValueError:
        raise RequestError(400, "body", f"Content-Length {header!r} is not an integer") from None
    if declared < 0:
        raise RequestError(400, "body", f"Content-Length {declared} is negative")
    if declared > max_bytes:
        raise RequestError(413, "body", f"body of {declared} bytes exceeds the limit of "
                                        f"{max_bytes} bytes (serve.max_body_bytes)")


def check_body_size(n_bytes: int, max_bytes: int) -> None:
    """Reject a body (or the part read so far) of ``n_bytes`` above ``max_bytes`` (413)."""
    if n_bytes > max_bytes:
        raise RequestError(413, "body", f"body exceeds the limit of {max_bytes} bytes "
                                        f"(serve.max_body_bytes)")


def parse_json(body: bytes) -> dict[str, Any]:
    """Decode a UTF-8 JSON object (``NaN``/``Infinity`` literals are accepted here and rejected
    later, naming the lead).

    Raises:
        RequestError: 400 for bytes that are not UTF-8 JSON, 422 when it is not an object.
    """
    if not body:
        raise RequestError(400, "body", "empty body; expected a JSON object")
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RequestError(400, "body", f"body is not UTF-8: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise RequestError(400, "body", f"invalid JSON: {exc.msg} at line {exc.lineno} "
                                        f"column {exc.colno}") from None
    if not isinstance(data, dict):
        raise RequestError(422, "body", f"expected a JSON object, got {type(data).__name__}")
    return data


# ------------------------------------------------------------------------------------------------
# fields
# ------------------------------------------------------------------------------------------------

def _is_number(value: Any) -> bool:
    return type(value) is float or type(value) is int  # bool is an int subclass: excluded


def parse_ecg(value: Any) -> np.ndarray:
    """``ecg`` (JSON lists) -> ``(12, T)`` float64 mV, checked: 12 leads, equal lengths,
    ``T > 0``, numbers (finiteness is checked by :func:`check_finite`).

    Raises:
        RequestError: 422 on ``ecg`` naming the lead and the problem.
    """
    if not isinstance(value, list):
        raise RequestError(422, "ecg", f"expected a list of 12 leads ({' '.join(LEADS)}), "
                                       f"got {type(value).__name__}")
    if len(value) != len(LEADS):
        raise RequestError(422, "ecg", f"expected 12 leads, got {len(value)} (lead order: "
                                       f"{' '.join(LEADS)})")
    for lead, samples in zip(LEADS, value):
        if not isinstance(samples, list):
            raise RequestError(422, "ecg", f"lead {lead}: expected a list of numbers, got "
                                           f"{type(samples).__name__}")
    lengths = [len(samples) for samples in value]
    if lengths[0] == 0:
        raise RequestError(422, "ecg", f"lead {LEADS[0]}: no samples")
    for lead, n in zip(LEADS, lengths):
        if n != lengths[0]:
            raise RequestError(422, "ecg", f"all leads must have the same length: lead {lead} "
                                           f"has {n} samples, lead {LEADS[0]} has {lengths[0]}")
    for lead, samples in zip(LEADS, value):
        for i, v in enumerate(samples):
            if not _is_number(v):
                raise RequestError(422, "ecg", f"lead {lead}[{i}]: expected a number (mV), "
                                               f"got {v!r}")
    return np.asarray(value, dtype=np.float64)


def check_finite(x: np.ndarray, field: str = "ecg") -> None:
    """Every sample of ``x`` ``(12, T)`` mV is finite.

    Raises:
        RequestError: 422 on ``field`` naming the leads that hold NaN/Infinity.
    """
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = [lead for lead, ok in zip(LEADS, finite) if not ok]
        raise RequestError(422, field, f"non-finite values (NaN/Infinity) in lead(s) "
                                       f"{', '.join(bad)}")


def validate_ecg(value: Any) -> np.ndarray:
    """``ecg`` -> ``(12, T)`` float64 mV, checked: 12 leads, equal lengths, numbers, finite
    (:func:`parse_ecg` then :func:`check_finite`).

    Raises:
        RequestError: 422 naming the lead and the problem.
    """
    x = parse_ecg(value)
    check_finite(x)
    return x


def validate_fs(value: Any, serve: ServeConfig) -> float:
    """``fs`` in Hz within ``[serve.min_fs, serve.max_fs]``."""
    if not _is_number(value) or not math.isfinite(value):
        raise RequestError(422, "fs", f"expected a number (Hz), got {value!r}")
    fs = float(value)
    check_fs(fs, serve)
    return fs


def check_fs(fs: float, serve: ServeConfig, field: str = "fs") -> None:
    """A sampling rate ``fs`` (Hz) within ``[serve.min_fs, serve.max_fs]``.

    Raises:
        RequestError: 422 on ``field``.
    """
    if not (math.isfinite(fs) and serve.min_fs <= fs <= serve.max_fs):
        raise RequestError(422, field, f"{fs:g} Hz outside the accepted range "
                                       f"[{serve.min_fs:g}, {serve.max_fs:g}] Hz")


def validate_duration(n_samples: int, fs: float, serve: ServeConfig,
                      field: str = "ecg") -> None:
    """Record length ``n_samples / fs`` in seconds must lie in
    ``[serve.min_seconds, serve.max_seconds]`` (else 422 on ``field``)."""
    seconds = n_samples / fs
    if not serve.min_seconds <= seconds <= serve.max_seconds:
        raise RequestError(422, field, f"duration {seconds:g} s ({n_samples} samples at {fs:g} "
                                       f"Hz) outside [{serve.min_seconds:g}, "
                                       f"{serve.max_seconds:g}] s")


def to_model_signal(x: np.ndarray, fs: float, data: DataConfig) -> np.ndarray:
    """``(12, T)`` mV at ``fs`` Hz -> ``(12, data.n_samples)`` float32 mV at ``data.fs`` Hz
    through :func:`ecglm.data.preprocess.preprocess`, the path the shard records took
    (``data.normalize`` filters, resampling, crop/pad policy). The shards store that signal
    as int16 microvolts, so the model saw it during training within 0.5 uV of this output."""
    y = preprocess(x, fs, data.normalize, data.fs, data.n_samples)
    return np.ascontiguousarray(y, dtype=np.float32)


def validate_signal_request(x: np.ndarray, fs: float, fields: Mapping[str, Any],
                            serve: ServeConfig, target: DataConfig, task: str = "qa", *,
                            names: SignalFields = JSON_FIELDS) -> ECGRequest:
    """The checks and conversion every input form shares.

    Args:
        x: ``(12, T)`` float64 mV, lead order :data:`LEADS`, ``T > 0`` (may hold NaN/inf:
            rejected here, naming the leads).
        fs: sampling rate of ``x`` in Hz.
        fields: the task's fields only (``qa``: ``question``, ``options``), as decoded.
        serve: request limits (``serve.min_fs`` ... ``serve.max_seconds``).
        target: the model's data section (``data.fs``, ``data.n_samples``, ``data.normalize``).
        task: the served model's task (its plugin names and validates the fields).
        names: the request field each signal error names (:class:`SignalFields`; the JSON
            names by default).

    Checks, in order: unknown task fields, finite samples, ``fs`` range, duration, the task
    row (:meth:`ecglm.tasks.base.Task.request_row`); then :func:`to_model_signal`.

    Raises:
        RequestError: 422 naming the first invalid field.
    """
    x = np.asarray(x, dtype=np.float64)
    plugin = get_task(task)
    unknown = sorted(set(fields) - plugin.request_fields)
    if unknown:
        raise RequestError(422, unknown[0], f"unknown field(s) {unknown} for a {task!r} "
                                            f"endpoint; allowed: {sorted(plugin.request_fields)}")
    if x.ndim != 2 or x.shape[0] != len(LEADS) or x.shape[1] == 0:
        raise RequestError(422, names.samples, f"expected (12, T) samples with T > 0, got "
                                               f"shape {tuple(x.shape)}")
    check_finite(x, names.samples)
    check_fs(fs, serve, names.fs)
    validate_duration(int(x.shape[1]), fs, serve, names.duration)
    row = plugin.request_row(fields, serve)
    return ECGRequest(signal=to_model_signal(x, fs, target), row=row, input_fs=float(fs),
                      input_samples=int(x.shape[1]))


def validate_request(data: Mapping[str, Any], serve: ServeConfig,
                     target: DataConfig, task: str = "qa") -> ECGRequest:
    """Check a decoded request object field by field and convert its ECG for the model.

    ``task`` is the served model's task: its plugin names the fields it takes besides ``ecg``
    and ``fs`` (``qa``: ``question`` and, unless it is a yes/no question, ``options``; the
    generation tasks: none) and validates them. ``ecg`` and ``fs`` are parsed here
    (:func:`validate_ecg`, :func:`validate_fs`), the rest is :func:`validate_signal_request`.

    Raises:
        RequestError: 422 naming the first invalid field.
    """
    plugin = get_task(task)
    allowed = BASE_FIELDS | plugin.request_fields
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise RequestError(422, unknown[0], f"unknown field(s) {unknown} for a {task!r} "
                                            f"endpoint; allowed: {sorted(allowed)}")
    for key in ("ecg", "fs"):
        if key not in data:
            raise RequestError(422, key, "missing required field")
    x = validate_ecg(data["ecg"])
    fs = validate_fs(data["fs"], serve)
    task_fields = {k: v for k, v in data.items() if k not in BASE_FIELDS}
    return validate_signal_request(x, fs, task_fields, serve, target, task)


def parse_request(body: bytes, content_length: Optional[str], serve: ServeConfig,
                  target: DataConfig, task: str = "qa") -> ECGRequest:
    """Size check, JSON decoding and validation of a raw body, in that order."""
    check_content_length(content_length, serve.max_body_bytes)
    check_body_size(len(body), serve.max_body_bytes)
    return validate_request(parse_json(body), serve, target, task)

