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


def validate_ecg(value: Any) -> np.ndarray:
    """``ecg`` -> ``(12, T)`` float64 mV, checked: 12 leads, equal lengths, numbers, finite.

    Raises:
        RequestError: 422 naming the lead and the problem.
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
    x = np.asarray(value, dtype=np.float64)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = [lead for lead, ok in zip(LEADS, finite) if not ok]
        raise RequestError(422, "ecg", f"non-finite values (NaN/Infinity) in lead(s) "
                                       f"{', '.join(bad)}")
    return x


def validate_fs(value: Any, serve: ServeConfig) -> float:
    """``fs`` in Hz within ``[serve.min_fs, serve.max_fs]``."""
    if not _is_number(value) or not math.isfinite(value):
        raise RequestError(422, "fs", f"expected a number (Hz), got {value!r}")
    fs = float(value)
    if not serve.min_fs <= fs <= serve.max_fs:
        raise RequestError(422, "fs", f"{fs:g} Hz outside the accepted range "
                                      f"[{serve.min_fs:g}, {serve.max_fs:g}] Hz")
    return fs


def validate_duration(n_samples: int, fs: float, serve: ServeConfig) -> None:
    """Record length ``n_samples / fs`` in seconds must lie in
    ``[serve.min_seconds, serve.max_seconds]``."""
    seconds = n_samples / fs
    if not serve.min_seconds <= seconds <= serve.max_seconds:
        raise RequestError(422, "ecg", f"duration {seconds:g} s ({n_samples} samples at {fs:g} "
                                       f"Hz) outside [{serve.min_seconds:g}, "
                                       f"{serve.max_seconds:g}] s")


def to_model_signal(x: np.ndarray, fs: float, data: DataConfig) -> np.ndarray:
    """``(12, T)`` mV at ``fs`` Hz -> ``(12, data.n_samples)`` float32 mV at ``data.fs`` Hz
    through :func:`ecglm.data.preprocess.preprocess`, the path the shard records took
    (``data.normalize`` filters, resampling, crop/pad policy). The shards store that signal
    as int16 microvolts, so the model saw it during training within 0.5 uV of this output."""
    y = preprocess(x, fs, data.normalize, data.fs, data.n_samples)
    return np.ascontiguousarray(y, dtype=np.float32)


def validate_request(data: Mapping[str, Any], serve: ServeConfig,
                     target: DataConfig, task: str = "qa") -> ECGRequest:
    """Check a decoded request object field by field and convert its ECG for the model.

    ``task`` is the served model's task: its plugin names the fields it takes besides ``ecg``
    and ``fs`` (``qa``: ``question`` and, unless it is a yes/no question, ``options``; the
    generation tasks: none) and validates them.

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
    validate_duration(x.shape[1], fs, serve)
    row = plugin.request_row(data, serve)
    return ECGRequest(signal=to_model_signal(x, fs, target), row=row, input_fs=fs,
                      input_samples=int(x.shape[1]))


def parse_request(body: bytes, content_length: Optional[str], serve: ServeConfig,
                  target: DataConfig, task: str = "qa") -> ECGRequest:
    """Size check, JSON decoding and validation of a raw body, in that order."""
    check_content_length(content_length, serve.max_body_bytes)
    check_body_size(len(body), serve.max_body_bytes)
    return validate_request(parse_json(body), serve, target, task)

