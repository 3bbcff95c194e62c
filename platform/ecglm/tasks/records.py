"""Per-record task rows (``report``, ``grounding``, ``classify``) built from the record shards.

One row per usable record and split, in the QA rows' layout so batching, retrieval and
evaluation are shared: ``sample_id`` (= ``ecg_id``), ``ecg_ids`` ``[ecg_id]``, ``n_ecg`` 1,
``n_samples``, ``signals`` (int16 microvolt bytes), ``patient_id``, ``split``, ``target`` (the
reference text) and, for ``classify``, ``labels``. Written once per (shards, task, targets
config) to::

    <shards root>/tasks/<task>-<hash>/{train,valid,test}.parquet
    <shards root>/tasks/<task>-<hash>/quarantine.jsonl   {"id": "ecg:<id>", "reason": ...}
    <shards root>/tasks/<task>-<hash>/manifest.json      counts: in = ok + quarantined

A task supplies a :class:`TargetBuilder`: the record's target (or the reason to quarantine
it), and the provenance that goes into the cache key and the manifest.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from ecglm.config import ExperimentConfig, config_hash
from ecglm.data.splits import SPLITS
from ecglm.tasks.base import RowCounts, TaskData, TaskManifest, split_paths
from ecglm.utils.cache_dirs import write_once

TASKS_FORMAT_VERSION = 2
PROGRESS_EVERY_S = 5.0
RECORD_COLUMNS = ("ecg_id", "patient_id", "split", "n_samples", "signal", "report", "scp_codes")

TASK_SCHEMA = pa.schema([
    ("sample_id", pa.int64()), ("ecg_ids", pa.list_(pa.int64())), ("n_ecg", pa.int64()),
    ("n_samples", pa.int64()), ("signals", pa.binary()), ("patient_id", pa.int64()),
    ("split", pa.string()), ("target", pa.string()),
])
LABEL_SCHEMA = TASK_SCHEMA.append(pa.field("labels", pa.list_(pa.string())))


@dataclass(frozen=True)
class Target:
    """A record's reference: ``text`` and, for label tasks, ``labels``; or the ``reason`` it
    is quarantined (``text`` empty)."""

    text: str = ""
    labels: Optional[tuple[str, ...]] = None
    reason: str = ""


class TargetBuilder(Protocol):
    """Turns one record (the columns of :data:`RECORD_COLUMNS`) into its :class:`Target`."""

    def __call__(self, record: Mapping[str, Any]) -> Target: ...


def _progress(task: str, i: int, n: int, t0: float, n_bad: int) -> None:
    rate = (i + 1) / max(time.perf_counter() - t0, 1e-9)
    print(f"[tasks] {task}: {i + 1}/{n} records ({rate:.1f} rec/s, ETA "
          f"{(n - i - 1) / rate:.0f}s), {n_bad} quarantined", flush=True)


def _write_folder(root: Path, rows: dict[str, list[dict[str, Any]]], schema: pa.Schema,
                  quarantine: list[dict[str, str]], manifest: TaskManifest) -> None:
    """Write the folder once (:func:`ecglm.utils.cache_dirs.write_once`): a concurrent
    writer that finishes first wins and this build is dropped (same content)."""

    def write(tmp: Path) -> dict[str, Any]:
        for split in SPLITS:
            if rows.get(split):
                rows[split].sort(key=lambda r: r["sample_id"])
                pq.write_table(pa.Table.from_pylist(rows[split], schema=schema),
                               str(tmp / f"{split}.parquet"))
        (tmp / "quarantine.jsonl").write_text("".join(json.dumps(q) + "\n" for q in quarantine))
        (tmp / "manifest.json").write_text(json.dumps(manifest.to_json(), indent=2))
        return {"kind": "task_rows", "task": manifest.task,
                "hash": manifest.details.get("hash")}

    write_once(root, write, is_finished=lambda f: (f / "manifest.json").is_file())


def build_record_rows(cfg: ExperimentConfig, shards: Any, task: str, target: TargetBuilder,
                      provenance: Mapping[str, Any],
                      progress: Callable[[str, int, int, float, int], None] = _progress
                      ) -> TaskData:
    """Write (or reuse) the rows of ``task`` for every split.

    Args:
        cfg: resolved config (absolute paths).
        shards: the :class:`ecglm.data.shards.ShardSet` of the run.
        task: the task name (folder prefix and manifest).
        target: the task's target builder.
        provenance: everything besides the shards that decides the targets (hashed into the
            folder name, stored in the manifest).
    """
    digest = config_hash({"task": task, **provenance, "shards":
                          str(shards.manifest.get("config_hash")), "fs": cfg.data.fs,
                          "format": TASKS_FORMAT_VERSION})
    root = Path(shards.root) / "tasks" / f"{task}-{digest}"
    if (root / "manifest.json").exists():
        return TaskData(root, split_paths(root),
                        TaskManifest.from_json(json.loads((root / "manifest.json").read_text())))
    data = pq.read_table(str(shards.records), columns=list(RECORD_COLUMNS)).to_pydict()
    n = len(data["ecg_id"])
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    quarantine: list[dict[str, str]] = []
    with_labels = False
    t0 = last = time.perf_counter()
    for i in range(n):
        record = {k: data[k][i] for k in RECORD_COLUMNS}
        ecg_id = int(record["ecg_id"])
        result = target(record)
        if result.reason:
            quarantine.append({"id": f"ecg:{ecg_id}", "reason": result.reason})
        else:
            split = str(record["split"])
            row = {"sample_id": ecg_id, "ecg_ids": [ecg_id], "n_ecg": 1,
                   "n_samples": int(record["n_samples"]), "signals": record["signal"],
                   "patient_id": int(record["patient_id"]), "split": split,
                   "target": result.text}
            if result.labels is not None:
                row["labels"] = list(result.labels)
                with_labels = True
            rows.setdefault(split, []).append(row)
        if time.perf_counter() - last >= PROGRESS_EVERY_S or i == n - 1:
            last = time.perf_counter()
            progress(task, i, n, t0, len(quarantine))
    per_split = {s: len(rows.get(s, [])) for s in SPLITS}
    manifest = TaskManifest(task, RowCounts(n, n - len(quarantine), len(quarantine), per_split),
                            str(root / "quarantine.jsonl"), {**provenance, "hash": digest})
    _write_folder(root, rows, LABEL_SCHEMA if with_labels else TASK_SCHEMA, quarantine,
                  manifest)
    print(f"[tasks] {task}: {manifest.to_json()['counts']} -> {root} (quarantine report: "
          f"{manifest.quarantine})", flush=True)
    return TaskData(root, split_paths(root), manifest)
