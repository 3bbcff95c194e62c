"""Per-block writers of a shard build: Ray Data / Ray tasks read records (or join QA items to
their record signals) and write their own Parquet file; the driver only receives one small
result row per block and merges them into the manifest (:func:`merge_block_results`).

Record files are named ``<first ecg_id, 10 digits>.parquet`` (one per batch of at most
``data.records_per_shard`` usable rows, ecg ids ascending); QA files ``<chunk, 6 digits>.parquet``
(sample ids ascending across files). Record files use one row per row group, so the QA join
reads exactly the 120 kB signal of each ECG it needs (:func:`lookup_signals`).

A block result is a dict (one row of the block writer's output)::

    {"file": str ("" when the block had no usable row), "n_in": int, "n_ok": int,
     "n_flagged": int, "min_id": int, "max_id": int, "sha256": str,
     "quarantine": JSON list of {"id", "reason", "fp"[, "record"]}}
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ecglm.config.schema import NormalizeConfig
from ecglm.data.sharding import ok_rows, read_records_batch

RECORD_ROW_GROUP = 1
"""Rows per Parquet row group of record files: one, so a QA join reads one ECG per lookup."""
BLOCK_COLUMNS = ("file", "n_in", "n_ok", "n_flagged", "min_id", "max_id", "sha256", "quarantine")
"""Columns of a block result (see the module docstring)."""


def sha256_file(path: Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_table(table: pa.Table, path: Path, compression: str, row_group: int | None) -> str:
    """Write ``table`` as Parquet without dictionary pages; returns the file's sha256."""
    pq.write_table(table, path, compression=compression, use_dictionary=False,
                   row_group_size=row_group)
    return sha256_file(path)


def _result(file: str, n_in: int, ok: pa.Table | None, n_flagged: int, digest: str,
            quarantine: list[dict]) -> dict[str, Any]:
    ids = ok.column("ecg_id").to_numpy() if ok is not None and ok.num_rows else np.zeros(0)
    return {"file": file, "n_in": int(n_in), "n_ok": int(len(ids)), "n_flagged": int(n_flagged),
            "min_id": int(ids.min()) if len(ids) else -1,
            "max_id": int(ids.max()) if len(ids) else -1,
            "sha256": digest, "quarantine": json.dumps(quarantine)}


def write_record_block(batch: pd.DataFrame, out_dir: str, fs: int, n_samples: int,
                       policy: NormalizeConfig, schema: pa.Schema, compression: str,
                       progress: Any = None) -> pd.DataFrame:
    """Ray Data UDF: read the records of ``batch`` (catalog rows, ecg ids ascending), write the
    usable ones to ``<out_dir>/<first ecg_id>.parquet`` and return one block result row.

    Unreadable records are never dropped: each becomes a quarantine entry (ecg id, reason,
    file fingerprint, plus the original ``record`` name when the catalog has one)."""
    read = read_records_batch(batch, fs, n_samples, policy, progress)
    bad = read[read["error"] != ""]
    quarantine = [{"id": f"ecg:{int(e)}", "reason": str(r), "fp": str(f)}
                  for e, r, f in zip(bad["ecg_id"], bad["error"], bad["source_fp"])]
    if "record" in read.columns:
        quarantine = [{**q, "record": str(n)} for q, n in zip(quarantine, bad["record"])]
    ok = ok_rows(read, schema)
    n_flagged = int(sum(len(f) > 0 for f, e in zip(read["flags"], read["error"]) if not e))
    file, digest = "", ""
    if ok.num_rows:
        file = f"{int(ok.column('ecg_id')[0].as_py()):010d}.parquet"
        digest = write_table(ok, Path(out_dir) / file, compression, RECORD_ROW_GROUP)
    return pd.DataFrame([_result(file, len(read), ok, n_flagged, digest, quarantine)])


def reuse_previous(previous: Path | None, fps: dict[int, str], out_dir: Path,
                   schema: pa.Schema, compression: str
                   ) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """Carry the rows of a previous build whose ``source_fp`` still matches ``fps`` into
    ``out_dir``, one previous file at a time (a file kept whole is copied).

    Returns:
        ``(block results of the written files, {ecg_id: reason} of reusable quarantined)``.
    """
    if previous is None or not (previous / "records").is_dir():
        return [], {}
    results: list[dict[str, Any]] = []
    for src in sorted((previous / "records").glob("*.parquet")):
        try:
            table = pq.read_table(src, schema=schema, memory_map=True)
        except (pa.ArrowInvalid, OSError, ValueError):
            continue  # an unreadable old file: its records are read again
        ids = table.column("ecg_id").to_pylist()
        fp = table.column("source_fp").to_pylist()
        keep = [i for i, (e, f) in enumerate(zip(ids, fp)) if fps.get(int(e)) == f]
        if not keep:
            continue
        kept = table.take(keep)
        n_flagged = sum(len(f) > 0 for f in kept.column("flags").to_pylist())
        name = f"{int(ids[keep[0]]):010d}.parquet"
        if len(keep) == len(ids):
            shutil.copyfile(src, out_dir / name)
            digest = sha256_file(out_dir / name)
        else:
            digest = write_table(kept, out_dir / name, compression, RECORD_ROW_GROUP)
        results.append(_result(name, len(keep), kept, n_flagged, digest, []))
    bad: dict[int, str] = {}
    qfile = previous / "quarantine.jsonl"
    if qfile.is_file():
        with qfile.open() as fh:
            for line in fh:
                entry = json.loads(line)
                if str(entry.get("id", "")).startswith("ecg:") and \
                        fps.get(int(entry["id"][4:])) == entry.get("fp"):
                    bad[int(entry["id"][4:])] = entry["reason"]
    return results, bad


@dataclass
class MergedBlocks:
    """The per-block results of a records stage, merged."""

    n_in: int = 0
    n_ok: int = 0
    n_flagged: int = 0
    quarantine: list[dict] = field(default_factory=list)
    """Entries sorted by ecg id."""
    files: list[tuple[str, int, int]] = field(default_factory=list)
    """``(file name, min ecg_id, max ecg_id)`` of every written file, by name."""
    checksums: dict[str, str] = field(default_factory=dict)
    """``{file name: sha256}``."""


def merge_block_results(results: Iterable[dict[str, Any]]) -> MergedBlocks:
    """Merge block results (dicts with :data:`BLOCK_COLUMNS`).

    Raises:
        ValueError: a block's ``n_in`` is not ``n_ok`` plus its quarantined count, or two
            blocks name the same file (names the file and the counts).
    """
    out = MergedBlocks()
    for r in results:
        missing = [c for c in BLOCK_COLUMNS if c not in r]
        if missing:
            raise ValueError(f"block result: missing field(s) {missing}, got {sorted(r)}")
        quarantine = json.loads(r["quarantine"]) if isinstance(r["quarantine"], str) \
            else list(r["quarantine"])
        if int(r["n_in"]) != int(r["n_ok"]) + len(quarantine):
            raise ValueError(f"block result {r['file'] or '<no file>'}: n_in {r['n_in']} != "
                             f"n_ok {r['n_ok']} + {len(quarantine)} quarantined")
        out.n_in += int(r["n_in"])
        out.n_ok += int(r["n_ok"])
        out.n_flagged += int(r["n_flagged"])
        out.quarantine.extend(quarantine)
        if r["file"]:
            if r["file"] in out.checksums:
                raise ValueError(f"block result {r['file']}: file written by two blocks")
            out.checksums[str(r["file"])] = str(r["sha256"])
            out.files.append((str(r["file"]), int(r["min_id"]), int(r["max_id"])))
    out.quarantine.sort(key=lambda q: int(str(q["id"]).split(":", 1)[1]))
    out.files.sort()
    return out


def lookup_signals(records_dir: Path, files: list[tuple[str, int, int]],
                   ecg_ids: Iterable[int]) -> dict[int, bytes]:
    """Signal bytes of ``ecg_ids`` from the record files (``(name, min id, max id)``), reading
    only the row groups that hold them.

    Raises:
        KeyError: an ecg id is in no record file (names it).
    """
    wanted = sorted(set(int(e) for e in ecg_ids))
    mins = np.array([f[1] for f in files], dtype=np.int64)
    maxs = np.array([f[2] for f in files], dtype=np.int64)
    by_file: dict[int, set[int]] = {}
    for e in wanted:
        for k in np.nonzero((mins <= e) & (maxs >= e))[0].tolist():
            by_file.setdefault(k, set()).add(e)
    out: dict[int, bytes] = {}
    for k, need in sorted(by_file.items()):
        pf = pq.ParquetFile(records_dir / files[k][0], memory_map=True)
        ids = pf.read(columns=["ecg_id"]).column("ecg_id").to_pylist()
        starts = np.cumsum([0] + [pf.metadata.row_group(g).num_rows
                                  for g in range(pf.num_row_groups)])
        for row, e in enumerate(ids):
            if e in need and e not in out:
                g = int(np.searchsorted(starts, row, side="right") - 1)
                part = pf.read_row_group(g, columns=["ecg_id", "signal"])
                pos = part.column("ecg_id").to_pylist().index(e)
                out[e] = part.column("signal")[pos].as_py()
    missing = [e for e in wanted if e not in out]
    if missing:
        raise KeyError(f"ecg_id(s) {missing[:5]}: not in any record file of {records_dir}")
    return out


def write_qa_chunk(rows: list[dict[str, Any]], path: Path, records_dir: Path,
                   files: list[tuple[str, int, int]], schema: pa.Schema,
                   compression: str) -> dict[str, Any]:
    """Join one chunk of QA rows (``signals`` not yet set) to their ECGs' signals and write
    ``path``. Returns ``{"file", "n", "sha256"}``."""
    signal_of = lookup_signals(records_dir, files, (e for r in rows for e in r["ecg_ids"]))
    full = [{**r, "signals": b"".join(signal_of[e] for e in r["ecg_ids"])} for r in rows]
    digest = write_table(pa.Table.from_pylist(full, schema=schema), path, compression, None)
    return {"file": path.name, "n": len(rows), "sha256": digest}
