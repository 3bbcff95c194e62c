"""The record-reading stage of a shard build: the per-batch read/normalise UDF run by Ray Data
workers, live progress (records/s, MB/s) and file fingerprints for incremental re-runs (the
per-block writers and the reuse of a previous build are in :mod:`ecglm.data.shard_writer`).

Signals are int16 microvolts, row-major ``(n_ecg, 12, n_samples)`` bytes (see
:func:`encode_signals` / :func:`decode_signals`).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa

from ecglm.config.schema import NormalizeConfig
from ecglm.data.canonical import LEADS
from ecglm.data.errors import RecordError
from ecglm.data.readers import read_record

RECORD_SCHEMA = pa.schema([
    ("ecg_id", pa.int64()), ("patient_id", pa.int64()), ("split", pa.string()),
    ("fs", pa.int64()), ("n_samples", pa.int64()), ("signal", pa.binary()),
    ("report", pa.string()), ("scp_codes", pa.string()), ("labels", pa.string()),
    ("lead_mask", pa.list_(pa.bool_())), ("flags", pa.list_(pa.string())),
    ("source_fp", pa.string()),
])
"""Records Parquet: one ECG per row; ``labels`` JSON (PTB-XL label groups), ``lead_mask``
(12 bools, False = zero-filled lead), ``flags`` (see :class:`ecglm.data.canonical.ECGRecord`),
``source_fp`` (fingerprint of the record's files, for incremental re-runs)."""
NAMED_RECORD_SCHEMA = RECORD_SCHEMA.append(pa.field("record", pa.string()))
"""Records Parquet of the datasets besides PTB-XL (``data.dataset`` ``ludb``, ``cinc2021``,
``mimic``): :data:`RECORD_SCHEMA` plus ``record``, the original record name (see
:mod:`ecglm.data.datasets`). PTB-XL shards keep :data:`RECORD_SCHEMA` (the id is the name)."""


def record_schema(dataset: str) -> pa.Schema:
    """Records schema of ``data.dataset``: :data:`RECORD_SCHEMA` for ``ptbxl``, else
    :data:`NAMED_RECORD_SCHEMA`."""
    return RECORD_SCHEMA if dataset == "ptbxl" else NAMED_RECORD_SCHEMA


def encode_signals(x: np.ndarray) -> bytes:
    """``x`` ``(n_ecg, 12, T)`` float mV -> int16 microvolt bytes (clipped, row-major)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[1] != len(LEADS):
        raise ValueError(f"signals: expected shape (n_ecg, 12, T), got {x.shape}")
    return np.clip(np.rint(x * 1000.0), -32768, 32767).astype("<i2").tobytes()


def decode_signals(b: bytes, n_ecg: int, n_samples: int) -> np.ndarray:
    """Inverse of :func:`encode_signals`: float32 ``(n_ecg, 12, n_samples)`` in mV."""
    expected = n_ecg * len(LEADS) * n_samples * 2
    if len(b) != expected:
        raise ValueError(f"signals: expected {expected} bytes for n_ecg={n_ecg}, "
                         f"n_samples={n_samples}, got {len(b)}")
    arr = np.frombuffer(b, dtype="<i2").reshape(n_ecg, len(LEADS), n_samples)
    return arr.astype(np.float32) / np.float32(1000.0)


def record_files(path: str, listing: dict[str, list[os.DirEntry]]) -> list[os.DirEntry]:
    """Files belonging to record ``path`` (``<name>.*``; CPSC2018 ``<name>.mat``), from a
    per-folder ``listing`` cache filled on demand."""
    base = path[:-4] if path.lower().endswith(".mat") else path
    parent, name = os.path.split(base)
    if parent not in listing:
        try:
            listing[parent] = sorted(os.scandir(parent or "."), key=lambda e: e.name)
        except FileNotFoundError:
            listing[parent] = []
    prefix = name + "."
    return [e for e in listing[parent] if e.name.startswith(prefix) and e.is_file()]


def fingerprints(paths: Iterable[str]) -> dict[str, tuple[str, int]]:
    """``{path: (digest, bytes)}``: digest of each record's file names, sizes and modification
    times (no content is read; a changed, added or removed file changes it) and the total size
    of its files."""
    listing: dict[str, list[os.DirEntry]] = {}
    out: dict[str, tuple[str, int]] = {}
    for p in paths:
        h = hashlib.sha1()
        size = 0
        for e in record_files(p, listing):
            st = e.stat()
            size += st.st_size
            h.update(f"{e.name}:{st.st_size}:{st.st_mtime_ns};".encode())
        out[p] = (h.hexdigest(), size)
    return out


def files_fingerprint(files: Iterable[Path]) -> str:
    """Digest of names, sizes and mtimes of ``files`` (missing files count as absent)."""
    h = hashlib.sha1()
    for f in sorted(str(x) for x in files):
        if os.path.isfile(f):
            st = os.stat(f)
            h.update(f"{f}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


class ProgressCounter:
    """Ray actor body: counts records read by the Ray Data tasks (driver polls it)."""

    def __init__(self) -> None:
        self.n = 0
        self.bad = 0
        self.bytes = 0

    def add(self, n: int, bad: int, n_bytes: int) -> None:
        """Add a finished batch: ``n`` records, ``bad`` quarantined, ``n_bytes`` read."""
        self.n += n
        self.bad += bad
        self.bytes += n_bytes

    def snapshot(self) -> tuple[int, int, int]:
        """``(records, quarantined, bytes)`` so far."""
        return self.n, self.bad, self.bytes


def read_records_batch(batch: pd.DataFrame, fs: int, n_samples: int,
                       policy: NormalizeConfig | None = None,
                       progress: Any = None) -> pd.DataFrame:
    """Ray Data UDF: read and normalise each ``path`` of ``batch``.

    Adds ``fs``, ``n_samples``, ``signal`` (int16 uV bytes), ``lead_mask``, ``flags`` and
    ``error`` (``""`` when the record is fine, else the :class:`RecordError` text); drops
    ``path``. Reports the batch (records, quarantined, ``source_bytes`` summed) to ``progress``
    (a :class:`ProgressCounter` actor) if given.
    """
    policy = policy or NormalizeConfig()
    signals, masks, flags, errors = [], [], [], []
    for path in batch["path"]:
        try:
            rec = read_record(path, policy, fs, n_samples)
            signals.append(encode_signals(rec.signal[None]))
            masks.append([bool(m) for m in rec.lead_mask])
            flags.append(list(rec.flags))
            errors.append("")
        except RecordError as exc:
            signals.append(b"")
            masks.append([False] * len(LEADS))
            flags.append([])
            errors.append(str(exc))
        except Exception as exc:  # a reader bug must not abort the whole build
            signals.append(b"")
            masks.append([False] * len(LEADS))
            flags.append([])
            errors.append(f"record {path}: reader: unexpected {type(exc).__name__}: {exc}")
    out = batch.drop(columns=["path"]).copy()
    out["fs"] = fs
    out["n_samples"] = n_samples
    out["signal"] = signals
    out["lead_mask"] = masks
    out["flags"] = flags
    out["error"] = errors
    if progress is not None:
        n_bytes = int(batch["source_bytes"].sum()) if "source_bytes" in batch else 0
        progress.add.remote(len(out), sum(bool(e) for e in errors), n_bytes)
    return out


def ok_rows(batch: pd.DataFrame, schema: pa.Schema = RECORD_SCHEMA) -> pa.Table:
    """Rows without error, in ``schema`` (:data:`RECORD_SCHEMA` or
    :data:`NAMED_RECORD_SCHEMA`)."""
    ok = batch[batch["error"] == ""][list(schema.names)]
    return pa.Table.from_pandas(ok, schema=schema, preserve_index=False)


def run_with_progress(fn: Callable[[], Any], poll: Callable[[], tuple[int, int, int]],
                      total: int, every_s: float = 2.0, label: str = "read") -> Any:
    """Run ``fn`` in a thread; every ``every_s`` s print ``done/total records (records/s,
    MB/s), quarantined`` from ``poll()``. Returns ``fn()``'s result (re-raises its error)."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    t0 = time.perf_counter()
    worker = threading.Thread(target=target, name="ecglm-shard-read", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(timeout=every_s)
        if worker.is_alive():
            try:
                n, bad, n_bytes = poll()
            except Exception:  # a slow counter must not stop the build; try again later
                continue
            dt = max(time.perf_counter() - t0, 1e-9)
            print(f"[ecglm.data] {label} {n}/{total} records ({n / dt:.1f} records/s, "
                  f"{n_bytes / dt / 1e6:.1f} MB/s), {bad} quarantined", flush=True)
    if "error" in result:
        raise result["error"]
    return result.get("value")
