"""Parquet shards of records and QA items, written with Ray Data.

Layout under ``<data.shard_dir>/<content_hash>/``::

    records/*.parquet          one row per readable ECG
    qa/{train,valid,test}/*.parquet   one row per QA item with its ECGs' signals
    quarantine.jsonl           {"id", "reason"} per rejected record ("ecg:<id>") or item ("qa:<id>")
    manifest.json              source, kind, config_hash, counts, quarantine path

Signals are int16 microvolts (clipped), row-major ``(n_ecg, 12, n_samples)`` bytes; see
:func:`encode_signals` / :func:`decode_signals`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ecglm.config import config_hash, to_dict
from ecglm.config.schema import ExperimentConfig
from ecglm.data.ecgqa import QAItem, load_ecgqa_items
from ecglm.data.errors import RecordError
from ecglm.data.ptbxl import load_ptbxl_catalog
from ecglm.data.records import LEADS, read_wfdb
from ecglm.data.source import DataSource, resolve_source
from ecglm.data.splits import SPLITS, record_splits
from ecglm.utils.ray_env import init_ray

SHARD_FORMAT_VERSION = 2  # 2: cross-split comparison items quarantined
"""Bumped when the shard layout or encoding changes (part of the content hash)."""
OBJECT_STORE_BYTES = 1536 * 1024**2
"""Object store of a local Ray instance started by :func:`build_shards` (1.5 GiB)."""

RECORD_SCHEMA = pa.schema([
    ("ecg_id", pa.int64()), ("patient_id", pa.int64()), ("split", pa.string()),
    ("fs", pa.int64()), ("n_samples", pa.int64()), ("signal", pa.binary()),
    ("report", pa.string()), ("scp_codes", pa.string()),
])
QA_SCHEMA = pa.schema([
    ("sample_id", pa.int64()), ("template_id", pa.int64()), ("question_type", pa.string()),
    ("attribute_type", pa.string()), ("question", pa.string()),
    ("answer", pa.list_(pa.string())), ("options", pa.list_(pa.string())),
    ("ecg_ids", pa.list_(pa.int64())), ("patient_ids", pa.list_(pa.int64())),
    ("n_ecg", pa.int64()), ("n_samples", pa.int64()), ("signals", pa.binary()),
    ("split", pa.string()),
])


@dataclass
class ShardSet:
    """A built shard folder: ``records`` and ``qa[split]`` are Parquet directories."""

    root: Path
    records: Path
    qa: dict[str, Path]
    manifest: dict


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


def shard_hash(cfg: ExperimentConfig, kind: str) -> str:
    """Content hash of a shard folder: data section + source kind + seed + format version."""
    return config_hash({"data": to_dict(cfg.data), "source": kind, "seed": cfg.seed,
                        "format": SHARD_FORMAT_VERSION})


@contextmanager
def _ray_data_settings() -> Iterator[None]:
    """Ordered output and no progress bars for the build; the previous settings come back."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.enable_operator_progress_bars,
             ctx.execution_options.preserve_order)
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.execution_options.preserve_order = True
    try:
        yield
    finally:
        (ctx.enable_progress_bars, ctx.enable_operator_progress_bars,
         ctx.execution_options.preserve_order) = saved


def read_records_batch(batch: pd.DataFrame, fs: int, n_samples: int) -> pd.DataFrame:
    """Ray Data UDF: read each ``path`` of ``batch``; failures go to the ``error`` column."""
    signals, errors = [], []
    for path in batch["path"]:
        try:
            x, _ = read_wfdb(path, fs, n_samples)
            signals.append(encode_signals(x[None]))
            errors.append("")
        except RecordError as exc:
            signals.append(b"")
            errors.append(str(exc))
    out = batch.drop(columns=["path"]).copy()
    out["fs"] = fs
    out["n_samples"] = n_samples
    out["signal"] = signals
    out["error"] = errors
    return out


def _ok_rows(batch: pd.DataFrame) -> pa.Table:
    ok = batch[batch["error"] == ""][list(RECORD_SCHEMA.names)]
    return pa.Table.from_pandas(ok, schema=RECORD_SCHEMA, preserve_index=False)


def _write(ds: Any, n_rows: int, path: Path, schema: pa.Schema, rows_per_file: int) -> None:
    """Write ``ds`` as Parquet (an empty file with ``schema`` when there are no rows)."""
    path.mkdir(parents=True, exist_ok=True)
    if n_rows == 0:
        pq.write_table(schema.empty_table(), path / "empty.parquet")
        return
    n_files = max(1, -(-n_rows // rows_per_file))
    ds.repartition(n_files).write_parquet(str(path), max_rows_per_file=rows_per_file)


def _select_items(items: list[QAItem], max_items: int | None, seed: int) -> list[QAItem]:
    if max_items is None or len(items) <= max_items:
        return items
    keep = np.random.default_rng(seed).choice(len(items), size=max_items, replace=False)
    return [items[i] for i in sorted(int(k) for k in keep)]


def _load_existing(root: Path, digest: str) -> ShardSet | None:
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if manifest.get("config_hash") != digest:
        return None
    return ShardSet(root=root, records=root / "records",
                    qa={s: root / "qa" / s for s in SPLITS}, manifest=manifest)


def build_shards(cfg: ExperimentConfig) -> ShardSet:
    """Resolve the data source, read every record with Ray Data and write the shard folder.

    Reuses ``<data.shard_dir>/<content_hash>`` when its manifest carries the same hash.
    Starts Ray (``train.ray_num_cpus`` CPUs, 1.5 GiB object store) only if it is not running;
    a Ray instance started here is left running for the caller.

    Returns:
        The :class:`ShardSet`; ``manifest["counts"]`` has ``records_in = records_ok +
        records_quarantined`` and ``qa_in = qa_ok + qa_quarantined``.
    """
    dcfg = cfg.data
    source = resolve_source(dcfg, cfg.seed)
    digest = shard_hash(cfg, source.kind)
    final = Path(dcfg.shard_dir).resolve() / digest
    existing = _load_existing(final, digest)
    if existing is not None:
        print(f"[ecglm.data] reusing shards {final} (content hash {digest})")
        return existing
    tmp = final.parent / f".{digest}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    init_ray(cfg.train.ray_num_cpus, OBJECT_STORE_BYTES)
    try:
        with _ray_data_settings():
            manifest = _build_into(cfg, source, digest, tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    concurrent = _load_existing(final, digest)
    if concurrent is not None:  # another process finished the same build first
        shutil.rmtree(tmp, ignore_errors=True)
        return concurrent
    if final.exists():  # an incomplete folder without a matching manifest
        shutil.rmtree(final)
    os.replace(tmp, final)
    return ShardSet(root=final, records=final / "records",
                    qa={s: final / "qa" / s for s in SPLITS}, manifest=manifest)


def _build_into(cfg: ExperimentConfig, source: DataSource, digest: str, out: Path,
                final: Path) -> dict:
    import ray

    dcfg = cfg.data
    n_samples = dcfg.n_samples
    catalog = load_ptbxl_catalog(source.root, dcfg.max_ecg_id)
    splits = record_splits(catalog["ecg_id"].tolist(), catalog["patient_id"].tolist(),
                           catalog["strat_fold"].tolist(), dcfg.qa_split, dcfg.valid_fraction,
                           dcfg.test_fraction, cfg.seed, source.root)
    catalog = catalog.assign(split=catalog["ecg_id"].map(splits))
    if catalog.empty:
        raise ValueError(f"data.max_ecg_id: no PTB-XL record with ecg_id <= {dcfg.max_ecg_id} "
                         f"found under {source.root}")

    items = catalog[["ecg_id", "patient_id", "split", "path", "report", "scp_codes"]]
    t0 = time.perf_counter()
    n_blocks = max(1, min(len(items), 4 * cfg.train.ray_num_cpus))
    ds = (ray.data.from_items(items.to_dict("records"), override_num_blocks=n_blocks)
          .map_batches(read_records_batch, batch_format="pandas", batch_size=16,
                       fn_kwargs={"fs": dcfg.fs, "n_samples": n_samples})
          .materialize())
    status = ds.select_columns(["ecg_id", "signal", "error"]).to_pandas()
    dt = max(time.perf_counter() - t0, 1e-9)
    failed = status[status["error"] != ""]
    print(f"[ecglm.data] read {len(status)} records in {dt:.1f}s ({len(status) / dt:.1f} "
          f"records/s): {len(status) - len(failed)} ok, {len(failed)} quarantined")
    _write(ds.map_batches(_ok_rows, batch_format="pandas"), len(status) - len(failed),
           out / "records", RECORD_SCHEMA, dcfg.records_per_shard)

    quarantine = [{"id": f"ecg:{int(e)}", "reason": r}
                  for e, r in zip(failed["ecg_id"], failed["error"])]
    bad_ids = set(int(e) for e in failed["ecg_id"])
    signal_of = {int(e): s for e, s, err in zip(status["ecg_id"], status["signal"],
                                                status["error"]) if not err}
    patient_of = dict(zip(catalog["ecg_id"].tolist(), catalog["patient_id"].tolist()))
    qa_items = _select_items(
        load_ecgqa_items(source.root, dcfg.qa_variant, set(catalog["ecg_id"].tolist())),
        dcfg.max_items, cfg.seed)
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for it in qa_items:
        bad = [e for e in it.ecg_ids if e in bad_ids]
        if bad:
            quarantine.append({"id": f"qa:{it.sample_id}",
                               "reason": f"ECG(s) {bad} quarantined"})
            continue
        item_splits = sorted({splits[e] for e in it.ecg_ids})
        if len(item_splits) > 1:  # a comparison across splits would leak patients
            quarantine.append({"id": f"qa:{it.sample_id}",
                               "reason": f"ECGs {list(it.ecg_ids)} fall in different splits "
                                         f"{item_splits}; left out to keep splits disjoint"})
            continue
        split = item_splits[0]
        rows[split].append({
            "sample_id": it.sample_id, "template_id": it.template_id,
            "question_type": it.question_type, "attribute_type": it.attribute_type,
            "question": it.question, "answer": it.answer, "options": it.options,
            "ecg_ids": it.ecg_ids, "patient_ids": [patient_of[e] for e in it.ecg_ids],
            "n_ecg": len(it.ecg_ids), "n_samples": n_samples,
            "signals": b"".join(signal_of[e] for e in it.ecg_ids), "split": split})
    for split in SPLITS:
        part = sorted(rows[split], key=lambda r: r["sample_id"])
        table = pa.Table.from_pylist(part, schema=QA_SCHEMA)
        _write(ray.data.from_arrow(table), len(part), out / "qa" / split, QA_SCHEMA,
               dcfg.records_per_shard)

    with (out / "quarantine.jsonl").open("w") as fh:
        for entry in quarantine:
            fh.write(json.dumps(entry) + "\n")
    n_qa_bad = len(quarantine) - len(failed)
    ok_records = catalog[~catalog["ecg_id"].isin(bad_ids)]
    manifest = {
        "source": str(source.root), "kind": source.kind, "config_hash": digest,
        "format_version": SHARD_FORMAT_VERSION, "fs": dcfg.fs, "n_samples": n_samples,
        "leads": list(LEADS), "signal_encoding": "int16 microvolts, (n_ecg, 12, n_samples)",
        "qa_split": dcfg.qa_split, "qa_variant": dcfg.qa_variant,
        "counts": {
            "records_in": len(status), "records_ok": len(status) - len(failed),
            "records_quarantined": len(failed), "qa_in": len(qa_items),
            "qa_ok": len(qa_items) - n_qa_bad, "qa_quarantined": n_qa_bad,
            "per_split": {s: {"records": int((ok_records["split"] == s).sum()),
                              "qa": len(rows[s])} for s in SPLITS},
        },
        "records": "records", "qa": {s: f"qa/{s}" for s in SPLITS},
        "quarantine": str(final / "quarantine.jsonl"),
        "build_seconds": round(time.perf_counter() - t0, 2),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
