"""Rows of the generation tasks (``task: report | grounding``) built from record shards.

One row per usable record and split, in the same layout as QA rows so the batching, retrieval
and evaluation code is shared: ``sample_id`` (= ``ecg_id``), ``ecg_ids`` ``[ecg_id]``, ``n_ecg``
1, ``n_samples``, ``signals`` (int16 microvolt bytes), ``patient_id``, ``split`` and ``target``
(the reference text). Written once per (shards, task, targets config) to::

    <shards root>/tasks/<task>-<hash>/{train,valid,test}.parquet
    <shards root>/tasks/<task>-<hash>/quarantine.jsonl   {"id": "ecg:<id>", "reason": ...}
    <shards root>/tasks/<task>-<hash>/manifest.json      counts: in = ok + quarantined

Targets:

* ``report``: the record's report (``targets.source: report``), the English descriptions of
  its SCP statements (``statements``; PTB-XL's ``scp_statements.csv``) or both, cleaned as
  MEIT does (``nan``/number-only sentences dropped, fewer than ``targets.min_tokens`` tokens
  quarantined).
* ``grounding``: a GEM-style feature-grounded interpretation composed from the record's own
  measured grounding features (:mod:`ecglm.features`) followed by the statement/report text as
  the impression. GEM had a teacher LLM write these from the features; here the composition is
  a deterministic template, so every number in a target is a measurement of that ECG. Records
  whose delineation fails are quarantined with the reason.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ecglm.config import ExperimentConfig, config_hash, to_dict
from ecglm.data.catalogs.mimic import clean_report
from ecglm.data.sharding import decode_signals
from ecglm.data.splits import SPLITS
from ecglm.utils.cache_dirs import write_once

_SENTENCE_END = re.compile(r"\.(?:\s+|$)")
TASKS_FORMAT_VERSION = 2
PROGRESS_EVERY_S = 5.0

TASK_SCHEMA = pa.schema([
    ("sample_id", pa.int64()), ("ecg_ids", pa.list_(pa.int64())), ("n_ecg", pa.int64()),
    ("n_samples", pa.int64()), ("signals", pa.binary()), ("patient_id", pa.int64()),
    ("split", pa.string()), ("target", pa.string()),
])


@dataclass
class TaskRows:
    """A built task folder: ``paths[split]`` are Parquet files (absent when a split is empty)."""

    root: Path
    paths: dict[str, Path]
    manifest: dict[str, Any]


def statement_texts(scp_codes: str | dict[str, float], statements: Optional[pd.DataFrame]
                    ) -> list[str]:
    """English descriptions of a record's SCP codes (most likely first; unknown codes and a
    missing table give ``[]``)."""
    codes = json.loads(scp_codes) if isinstance(scp_codes, str) else dict(scp_codes or {})
    if statements is None:
        return []
    out = []
    for code, _ in sorted(codes.items(), key=lambda kv: (-float(kv[1]), kv[0])):
        if code in statements.index:
            desc = str(statements.loc[code, "description"]).strip()
            if desc and desc.lower() != "nan" and desc not in out:
                out.append(desc)
    return out


def reference_text(report: str, scp_codes: str, source: str, statements: Optional[pd.DataFrame],
                   min_tokens: int) -> str:
    """Cleaned reference text of one record ("" when too short: the caller quarantines it).

    ``statements`` falls back to ``report`` when no statement table is available (synthetic
    data), ``both`` then equals ``report``. ``min_tokens`` applies to free text (``report``,
    ``both``, the fallback); statement descriptions only need to be non-empty.
    """
    parts: list[str] = []
    stmts = statement_texts(scp_codes, statements)
    if source in ("statements", "both") and stmts:
        parts.append(", ".join(stmts))
    if source in ("report", "both") or (source == "statements" and not stmts):
        parts.extend(_SENTENCE_END.split(str(report or "")))
    # MEIT's minimum length filters noisy free-text reports; curated statements ("normal
    # ECG, sinus rhythm") are short by nature and only need to be non-empty
    curated = source == "statements" and bool(stmts)
    return clean_report(parts, min_tokens=1 if curated else min_tokens)


def grounded_text(signal: np.ndarray, fs: float, impression: str) -> str:
    """GEM-style target: measured features in words, then ``Impression: <impression>``.

    Raises:
        ecglm.features.validation.SignalError: the ECG cannot be delineated.
    """
    from ecglm.features.grounding import grounding_features
    from ecglm.features.summary import summarize, summary_text

    summary = summarize(grounding_features(signal, fs))
    if summary["n_beats"] == 0:
        raise ValueError("no heartbeats could be measured")
    text = summary_text(summary)
    return f"{text} Impression: {impression}" if impression else text


def _statements(cfg: ExperimentConfig) -> Optional[pd.DataFrame]:
    from ecglm.data.ptbxl import load_scp_statements

    return load_scp_statements(Path(cfg.data.shared_root))


def _task_hash(cfg: ExperimentConfig, shards_hash: str, has_statements: bool) -> str:
    return config_hash({"task": cfg.task, "targets": to_dict(cfg.targets), "shards": shards_hash,
                        "fs": cfg.data.fs, "statements": has_statements,
                        "format": TASKS_FORMAT_VERSION})


def build_task_rows(cfg: ExperimentConfig, shards: Any) -> TaskRows:
    """Write (or reuse) the rows of ``cfg.task`` (``report``/``grounding``) for every split.

    Args:
        cfg: resolved config (absolute paths).
        shards: the :class:`ecglm.data.shards.ShardSet` of the run.

    Raises:
        ValueError: ``cfg.task`` is ``qa`` (QA rows live in the QA shards).
    """
    if cfg.task not in ("report", "grounding"):
        raise ValueError(f"task: build_task_rows serves 'report' and 'grounding', got {cfg.task!r}")
    statements = _statements(cfg)
    digest = _task_hash(cfg, str(shards.manifest.get("config_hash")), statements is not None)
    root = Path(shards.root) / "tasks" / f"{cfg.task}-{digest}"
    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        return TaskRows(root, {s: root / f"{s}.parquet" for s in SPLITS
                               if (root / f"{s}.parquet").exists()}, manifest)
    table = pq.read_table(str(shards.records), columns=[
        "ecg_id", "patient_id", "split", "n_samples", "signal", "report", "scp_codes"])
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    quarantine: list[dict[str, str]] = []
    data = table.to_pydict()
    n = table.num_rows
    t0 = last = time.perf_counter()
    for i in range(n):
        ecg_id = int(data["ecg_id"][i])
        # grounding: the impression may be short, the minimum applies to the whole target
        text = reference_text(data["report"][i], data["scp_codes"][i] or "{}",
                              cfg.targets.source, statements,
                              cfg.targets.min_tokens if cfg.task == "report" else 0)
        reason = "" if text else (f"reference text has fewer than {cfg.targets.min_tokens} "
                                  f"tokens after cleaning (targets.source={cfg.targets.source})")
        if cfg.task == "grounding":
            signal = decode_signals(data["signal"][i], 1, int(data["n_samples"][i]))[0]
            try:
                text = grounded_text(signal, cfg.data.fs, text)
                reason = ""
            except ValueError as exc:  # SignalError is a ValueError
                reason = f"grounding features: {exc}"
        if reason:
            quarantine.append({"id": f"ecg:{ecg_id}", "reason": reason})
        else:
            split = str(data["split"][i])
            rows.setdefault(split, []).append({
                "sample_id": ecg_id, "ecg_ids": [ecg_id], "n_ecg": 1,
                "n_samples": int(data["n_samples"][i]), "signals": data["signal"][i],
                "patient_id": int(data["patient_id"][i]), "split": split, "target": text})
        now = time.perf_counter()
        if now - last >= PROGRESS_EVERY_S or i == n - 1:
            last = now
            rate = (i + 1) / max(now - t0, 1e-9)
            print(f"[tasks] {cfg.task}: {i + 1}/{n} records ({rate:.1f} rec/s, ETA "
                  f"{(n - i - 1) / rate:.0f}s), {len(quarantine)} quarantined", flush=True)
    manifest = {"task": cfg.task, "targets": to_dict(cfg.targets), "hash": digest,
                "statements_table": statements is not None,
                "counts": {"in": n, "ok": n - len(quarantine), "quarantined": len(quarantine),
                           "per_split": {s: len(rows.get(s, [])) for s in SPLITS}},
                "quarantine": str(root / "quarantine.jsonl")}

    def write(tmp: Path) -> dict[str, Any]:
        for split in SPLITS:
            if rows.get(split):
                rows[split].sort(key=lambda r: r["sample_id"])
                pq.write_table(pa.Table.from_pylist(rows[split], schema=TASK_SCHEMA),
                               str(tmp / f"{split}.parquet"))
        (tmp / "quarantine.jsonl").write_text("".join(json.dumps(q) + "\n" for q in quarantine))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        return {"kind": "task_rows", "task": cfg.task, "hash": digest}

    # another process may finish the same rows first: then its folder is kept (same content)
    write_once(root, write, is_finished=lambda f: (f / "manifest.json").is_file())
    manifest = json.loads(manifest_path.read_text())
    paths = {s: root / f"{s}.parquet" for s in SPLITS if (root / f"{s}.parquet").exists()}
    print(f"[tasks] {cfg.task}: {manifest['counts']} -> {root} (quarantine report: "
          f"{manifest['quarantine']})", flush=True)
    return TaskRows(root, paths, manifest)
