"""Parquet shards of records and QA items, written with Ray Data.

Layout under ``<data.shard_dir>/<content_hash>/``::

    records/*.parquet          one row per usable ECG (:data:`RECORD_SCHEMA`; other datasets
                               than PTB-XL: ``NAMED_RECORD_SCHEMA``)
    qa/{train,valid,test}/*.parquet   one row per QA item with its ECGs' signals
    quarantine.jsonl           {"id", "reason"[, "fp"][, "record"]} per rejected record
                               ("ecg:<id>") or item ("qa:<id>")
    manifest.json              source, kind, config_hash, input_fingerprint, normalize policies,
                               counts (in = ok + quarantined), checksums, quarantine path
    .ecglm-cache.json          provenance of the build (pid, host, time; see
                               :func:`ecglm.utils.cache_dirs.write_once`)

The folder is written once through :func:`~ecglm.utils.cache_dirs.write_once` (temporary
sibling, atomic rename; concurrent builders of the same key end up sharing the winner's folder).

``data.dataset`` picks the catalog: ``ptbxl`` (PTB-XL records + ECG-QA items) or ``ludb``,
``cinc2021``, ``mimic`` (:mod:`ecglm.data.datasets`): record shards in
:data:`~ecglm.data.sharding.NAMED_RECORD_SCHEMA` (``record`` = original name), the same
manifest and quarantine file; QA items come from :mod:`ecglm.data.qa_source` (ECG-QA for
PTB-XL and MIMIC-IV-ECG; empty QA splits otherwise). ``records_missing.jsonl`` and
``qa_unavailable.jsonl`` list what the inputs name but the build could not use
(:mod:`ecglm.data.input_reports`, counts under ``manifest["inputs"]``).

The folder name hashes the ``data`` config (normalisation policies included; ``dataset``,
``mimic_root`` and ``max_records`` only when ``dataset`` is not ``ptbxl``, so PTB-XL hashes are
those of earlier builds), the source kind, the seed and the format version. A re-run with the
same config and unchanged input files reuses the folder as is; when input files changed, only
the changed records are read again. Reading prints live progress (records/s, MB/s).

Signals are int16 microvolts (clipped), row-major ``(n_ecg, 12, n_samples)`` bytes; see
:func:`encode_signals` / :func:`decode_signals`.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.data import DataContext

from ecglm.config import config_hash, to_dict
from ecglm.config.schema import ConfigError, ExperimentConfig
from ecglm.data.canonical import LEADS
from ecglm.data.input_reports import write_input_reports
from ecglm.data.qa_source import load_qa_items, qa_input_files
from ecglm.data.shard_inputs import input_fingerprint, qa_rows, select_items, shard_catalog
from ecglm.data.sharding import (RECORD_SCHEMA, ProgressCounter, checksums, decode_signals,
                                 encode_signals, ok_rows, read_records_batch, record_schema,
                                 reusable_rows, run_with_progress)
from ecglm.data.source import DataSource, resolve_source
from ecglm.data.splits import SPLITS
from ecglm.utils.cache_dirs import write_once
from ecglm.utils.ray_env import init_ray

__all__ = ["OBJECT_STORE_BYTES", "QA_SCHEMA", "RECORD_SCHEMA", "SHARD_FORMAT_VERSION",
           "ShardSet", "build_shards", "decode_signals", "encode_signals",
           "read_records_batch", "shard_hash"]

SHARD_FORMAT_VERSION = 3  # 2: cross-split comparison items quarantined; 3: normalize policies,
#                           labels/lead_mask/flags/source_fp record columns
"""Bumped when the shard layout or encoding changes (part of the content hash)."""
OBJECT_STORE_BYTES = 1536 * 1024**2
"""Object store of a local Ray instance started by :func:`build_shards` (1.5 GiB)."""
PROGRESS_EVERY_S = 2.0
"""Seconds between progress lines while records are read."""

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


NON_PTBXL_KEYS: tuple[str, ...] = ("dataset", "mimic_root", "max_records")
"""``data`` keys hashed only when ``data.dataset`` is not ``ptbxl``."""
UNHASHED_DEFAULTS: dict[str, object] = {"ptbxl_rate": 500, "qa_layout": "auto", "qa_root": None}
"""``data`` keys hashed only when they differ from these values (folders built before the keys
existed keep their hash)."""


def shard_hash(cfg: ExperimentConfig, kind: str) -> str:
    """Content hash of a shard folder: data section + source kind + seed + format version.

    For ``data.dataset: ptbxl`` the keys of :data:`NON_PTBXL_KEYS` are left out, so PTB-XL
    folders keep the hash they had before those keys existed."""
    data = to_dict(cfg.data)
    for key, default in UNHASHED_DEFAULTS.items():
        if data.get(key) == default:
            data.pop(key, None)
    if cfg.data.dataset == "ptbxl":
        for key in NON_PTBXL_KEYS:
            data.pop(key, None)
    return config_hash({"data": data, "source": kind, "seed": cfg.seed,
                        "format": SHARD_FORMAT_VERSION})


def require_qa_dataset(cfg: ExperimentConfig) -> None:
    """Raise ``ConfigError`` naming ``data.dataset`` unless it is ``ptbxl`` or ``mimic``: QA
    training and QA evaluation read QA shards, which only PTB-XL and MIMIC-IV-ECG (with ECG-QA)
    have (:mod:`ecglm.data.qa_source`)."""
    if cfg.data.dataset not in ("ptbxl", "mimic"):
        raise ConfigError(f"data.dataset: QA training/evaluation needs 'ptbxl' or 'mimic' "
                          f"(ECG-QA items exist for PTB-XL and MIMIC-IV-ECG only), got "
                          f"{cfg.data.dataset!r}; 'ecglm data shard' writes record shards "
                          f"for it")


@contextmanager
def _ray_data_settings() -> Iterator[None]:
    """Ordered output and no progress bars for the build; the previous settings come back."""
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


def _write(ds: Any, n_rows: int, path: Path, schema: pa.Schema, rows_per_file: int,
           compression: str = "none") -> None:
    """Write ``ds`` as Parquet (no dictionary pages: the 120 kB signal values are unique); an
    empty file with ``schema`` when there are no rows."""
    path.mkdir(parents=True, exist_ok=True)
    args = {"compression": compression, "use_dictionary": False}
    if n_rows == 0:
        pq.write_table(schema.empty_table(), path / "empty.parquet", **args)
        return
    n_files = max(1, -(-n_rows // rows_per_file))
    ds.repartition(n_files).write_parquet(str(path), max_rows_per_file=rows_per_file, **args)


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

    Reuses ``<data.shard_dir>/<content_hash>`` when its manifest carries the same config hash
    and input fingerprint; when only input files changed, unchanged records are copied from it
    and the rest are read again. Starts Ray (``train.ray_num_cpus`` CPUs, 1.5 GiB object store)
    only if it is not running; a Ray instance started here is left running for the caller.

    Returns:
        The :class:`ShardSet`; ``manifest["counts"]`` has ``records_in = records_ok +
        records_quarantined`` and ``qa_in = qa_ok + qa_quarantined``.
    """
    dcfg = cfg.data
    source = resolve_source(dcfg, cfg.seed)
    digest = shard_hash(cfg, source.kind)
    final = Path(dcfg.shard_dir).resolve() / digest
    catalog = shard_catalog(cfg, source)
    inputs = input_fingerprint(catalog, source.root, dcfg.dataset,
                               qa_input_files(dcfg, source.root))
    existing = _load_existing(final, digest)
    if existing is not None and existing.manifest.get("input_fingerprint") == inputs:
        print(f"[ecglm.data] reusing shards {final} (content hash {digest}, input unchanged)")
        return existing
    if existing is not None:
        print(f"[ecglm.data] input files changed since {final} was built: re-reading the "
              f"changed records only")

    def build(tmp: Path) -> dict:
        init_ray(cfg.train.ray_num_cpus, OBJECT_STORE_BYTES)
        with _ray_data_settings():
            _build_into(cfg, source, digest, catalog, inputs, tmp, final,
                        final if existing is not None else None)
        return {"kind": "shards", "config_hash": digest, "input_fingerprint": inputs}

    def is_finished(folder: Path) -> bool:
        done = _load_existing(folder, digest)
        return done is not None and done.manifest.get("input_fingerprint") == inputs

    # a concurrent build of the same key may win the rename: its folder is returned
    write_once(final, build, is_finished=is_finished)
    built = _load_existing(final, digest)
    if built is None:  # write_once returns only after is_finished(final): not reached
        raise RuntimeError(f"{final}: shard folder vanished after it was written")
    return built


def _read_records(cfg: ExperimentConfig, todo: pd.DataFrame) -> tuple[Any, pd.DataFrame]:
    """Read ``todo`` (catalog rows) with Ray Data and live progress.

    Returns:
        ``(materialized dataset of read rows or None, status frame with ecg_id, signal, error,
        flags, source_fp)``.
    """
    cols = ["ecg_id", "patient_id", "split", "path", "report", "scp_codes", "labels",
            "source_fp", "source_bytes"] + (["record"] if "record" in todo.columns else [])
    if todo.empty:
        return None, pd.DataFrame(columns=["ecg_id", "signal", "error", "flags", "source_fp"])
    progress = ray.remote(num_cpus=0)(ProgressCounter).remote()
    try:
        n_blocks = max(1, min(len(todo), 4 * cfg.train.ray_num_cpus))
        ds = (ray.data.from_items(todo[cols].to_dict("records"), override_num_blocks=n_blocks)
              .map_batches(read_records_batch, batch_format="pandas", batch_size=16,
                           fn_kwargs={"fs": cfg.data.fs, "n_samples": cfg.data.n_samples,
                                      "policy": cfg.data.normalize, "progress": progress}))
        ds = run_with_progress(ds.materialize,
                               lambda: ray.get(progress.snapshot.remote(), timeout=10),
                               len(todo), PROGRESS_EVERY_S)
    finally:
        ray.kill(progress)
    status = ds.select_columns(["ecg_id", "signal", "error", "flags", "source_fp"]).to_pandas()
    return ds, status


def _build_into(cfg: ExperimentConfig, source: DataSource, digest: str, catalog: pd.DataFrame,
                inputs: str, out: Path, final: Path, previous: Path | None) -> dict:
    dcfg = cfg.data
    n_samples = dcfg.n_samples
    splits = dict(zip(catalog["ecg_id"].tolist(), catalog["split"].tolist()))
    fp_of = dict(zip(catalog["ecg_id"].astype(int).tolist(), catalog["source_fp"].tolist()))
    schema = record_schema(dcfg.dataset)
    reused, reused_bad = reusable_rows(previous, fp_of, schema)
    reused_ids = set(reused_bad) | (set(reused.column("ecg_id").to_pylist()) if reused else set())
    if reused_ids:
        print(f"[ecglm.data] {len(reused_ids)} unchanged records taken from the previous build")
    todo = catalog[~catalog["ecg_id"].isin(reused_ids)]
    t0 = time.perf_counter()
    ds, status = _read_records(cfg, todo)
    dt = max(time.perf_counter() - t0, 1e-9)
    failed = status[status["error"] != ""]
    n_read_bytes = int(todo["source_bytes"].sum())
    print(f"[ecglm.data] read {len(status)} records in {dt:.1f}s ({len(status) / dt:.1f} "
          f"records/s, {n_read_bytes / dt / 1e6:.1f} MB/s): {len(status) - len(failed)} ok, "
          f"{len(failed)} quarantined", flush=True)
    parts = ([ds.map_batches(ok_rows, batch_format="pandas", fn_kwargs={"schema": schema})]
             if ds is not None else [])
    if reused is not None:
        parts.append(ray.data.from_arrow(reused))
    n_ok = len(catalog) - len(failed) - len(reused_bad)
    combined = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0] if parts else None
    _write(combined, n_ok, out / "records", schema, dcfg.records_per_shard,
           dcfg.shard_compression)

    quarantine = [{"id": f"ecg:{int(e)}", "reason": r, "fp": f}
                  for e, r, f in zip(failed["ecg_id"], failed["error"], failed["source_fp"])]
    quarantine += [{"id": f"ecg:{e}", "reason": r, "fp": fp_of[e]}
                   for e, r in sorted(reused_bad.items())]
    if "record" in catalog.columns:  # original record names of non-PTB-XL datasets
        name_of = dict(zip(catalog["ecg_id"].astype(int).tolist(), catalog["record"]))
        quarantine = [{**q, "record": name_of[int(q["id"][4:])]} for q in quarantine]
    n_rec_bad = len(quarantine)
    bad_ids = {int(e) for e in failed["ecg_id"]} | set(reused_bad)
    signal_of = {int(e): s for e, s, err in zip(status["ecg_id"], status["signal"],
                                                status["error"]) if not err}
    n_flagged = int(sum(len(f) > 0 for f, err in zip(status["flags"], status["error"])
                        if not err))
    if reused is not None:
        signal_of.update(zip(reused.column("ecg_id").to_pylist(),
                             reused.column("signal").to_pylist()))
        n_flagged += sum(len(f) > 0 for f in reused.column("flags").to_pylist())
    patient_of = dict(zip(catalog["ecg_id"].tolist(), catalog["patient_id"].tolist()))
    qa_source = load_qa_items(dcfg, source.root, set(catalog["ecg_id"].tolist()))
    qa_items = select_items(qa_source.items, dcfg.max_items, cfg.seed)
    rows = qa_rows(qa_items, splits, bad_ids, signal_of, patient_of, n_samples, quarantine)
    for split in SPLITS:
        part = sorted(rows[split], key=lambda r: r["sample_id"])
        table = pa.Table.from_pylist(part, schema=QA_SCHEMA)
        _write(ray.data.from_arrow(table), len(part), out / "qa" / split, QA_SCHEMA,
               dcfg.records_per_shard, dcfg.shard_compression)

    with (out / "quarantine.jsonl").open("w") as fh:
        for entry in quarantine:
            fh.write(json.dumps(entry) + "\n")
    n_qa_bad = len(quarantine) - n_rec_bad
    ok_records = catalog[~catalog["ecg_id"].isin(bad_ids)]
    manifest = {
        "source": str(source.root), "kind": source.kind, "dataset": dcfg.dataset,
        "config_hash": digest,
        "input_fingerprint": inputs,
        "format_version": SHARD_FORMAT_VERSION, "fs": dcfg.fs, "n_samples": n_samples,
        "leads": list(LEADS), "signal_encoding": "int16 microvolts, (n_ecg, 12, n_samples)",
        "qa_split": dcfg.qa_split, "qa_variant": dcfg.qa_variant,
        "normalize": to_dict(dcfg.normalize), "scp_min_likelihood": dcfg.scp_min_likelihood,
        "counts": {
            "records_in": len(catalog), "records_ok": len(catalog) - n_rec_bad,
            "records_quarantined": n_rec_bad, "records_flagged": n_flagged,
            "records_read": len(status), "records_reused": len(reused_ids),
            "qa_in": len(qa_items), "qa_ok": len(qa_items) - n_qa_bad,
            "qa_quarantined": n_qa_bad,
            "per_split": {s: {"records": int((ok_records["split"] == s).sum()),
                              "qa": len(rows[s])} for s in SPLITS},
        },
        "throughput": {"read_seconds": round(dt, 3),
                       "records_per_s": round(len(status) / dt, 2),
                       "mb_per_s": round(n_read_bytes / dt / 1e6, 3)},
        "inputs": write_input_reports(dcfg, source.root, qa_source, out, final),
        "records": "records", "qa": {s: f"qa/{s}" for s in SPLITS},
        "quarantine": str(final / "quarantine.jsonl"),
        "checksums": checksums(out),
        "build_seconds": round(time.perf_counter() - t0, 2),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
