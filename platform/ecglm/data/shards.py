"""Parquet shards of records and QA items, written with Ray Data.

Layout under ``<data.shard_dir>/<content_hash>/``::

    records/<first ecg_id>.parquet    one row per usable ECG (:data:`RECORD_SCHEMA`; other
                               datasets than PTB-XL: ``NAMED_RECORD_SCHEMA``), one ECG per
                               row group, written by the Ray Data worker that read it
    qa/{train,valid,test}/<chunk>.parquet   one row per QA item with its ECGs' signals
                               (sample ids ascending), written by Ray tasks
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

No signal passes through the driver: workers read, normalise and write, and return one small
result per block (counts, quarantined records, file checksum) that the driver merges into the
manifest (:mod:`ecglm.data.shard_writer`).

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
from ecglm.data.shard_writer import (merge_block_results, reuse_previous, sha256_file,
                                     write_qa_chunk, write_record_block)
from ecglm.data.sharding import (RECORD_SCHEMA, ProgressCounter, decode_signals, encode_signals,
                                 read_records_batch, record_schema, run_with_progress)
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
UNHASHED_DEFAULTS: dict[str, object] = {"ptbxl_rate": 500, "qa_layout": "auto", "qa_root": None,
                                        "synthetic_fs": None}
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


def _write_empty(path: Path, schema: pa.Schema) -> None:
    """An empty Parquet file with ``schema`` in folder ``path`` (a split or records folder
    without rows still reads as a table)."""
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(schema.empty_table(), path / "empty.parquet", compression="none",
                   use_dictionary=False)


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


def _records_stage(cfg: ExperimentConfig, todo: pd.DataFrame, out_dir: Path,
                   schema: pa.Schema) -> list[dict[str, Any]]:
    """Read and write ``todo`` (catalog rows) on Ray Data workers, with live progress: each
    batch of ``data.records_per_shard`` records becomes one Parquet file written by the
    worker, and one small block result (:mod:`ecglm.data.shard_writer`) comes back."""
    cols = ["ecg_id", "patient_id", "split", "path", "report", "scp_codes", "labels",
            "source_fp", "source_bytes"] + (["record"] if "record" in todo.columns else [])
    if todo.empty:
        return []
    todo = todo.sort_values("ecg_id", kind="stable")
    progress = ray.remote(num_cpus=0)(ProgressCounter).remote()
    try:
        # blocks of catalog rows: at least 4 per logical CPU, at most 16 files' worth each
        per_file = cfg.data.records_per_shard
        n_blocks = min(-(-len(todo) // per_file),
                       max(4 * cfg.train.ray_num_cpus, -(-len(todo) // (16 * per_file))))
        frame = todo[cols].reset_index(drop=True)
        step = -(-len(frame) // n_blocks)
        blocks = [frame.iloc[k:k + step] for k in range(0, len(frame), step)]
        ds = (ray.data.from_pandas(blocks)  # one block per frame, no per-row Python dicts
              .map_batches(write_record_block, batch_format="pandas",
                           batch_size=cfg.data.records_per_shard,
                           fn_kwargs={"out_dir": str(out_dir), "fs": cfg.data.fs,
                                      "n_samples": cfg.data.n_samples,
                                      "policy": cfg.data.normalize, "schema": schema,
                                      "compression": cfg.data.shard_compression,
                                      "progress": progress}))
        return run_with_progress(ds.take_all,
                                 lambda: ray.get(progress.snapshot.remote(), timeout=10),
                                 len(todo), PROGRESS_EVERY_S)
    finally:
        ray.kill(progress)


_qa_chunk_task = ray.remote(num_cpus=1, max_retries=0)(write_qa_chunk)


def _qa_stage(cfg: ExperimentConfig, rows: dict[str, list[dict]], out: Path,
              files: list[tuple[str, int, int]]) -> dict[str, str]:
    """Write the QA folders: each chunk of ``data.records_per_shard`` items (sample ids
    ascending) is joined to its ECG signals and written by a Ray task; at most
    ``2 * train.ray_num_cpus`` chunks are in flight. Returns ``{relative path: sha256}``."""
    per = cfg.data.records_per_shard
    files_ref = ray.put(files)
    jobs = []
    for split in SPLITS:
        part = sorted(rows[split], key=lambda r: r["sample_id"])
        folder = out / "qa" / split
        if not part:
            _write_empty(folder, QA_SCHEMA)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        jobs += [(folder / f"{k // per:06d}.parquet", part[k:k + per])
                 for k in range(0, len(part), per)]
    total = sum(len(chunk) for _, chunk in jobs)
    sums: dict[str, str] = {}
    pending: dict[Any, Path] = {}  # in-flight task -> its file
    limit = max(1, 2 * cfg.train.ray_num_cpus)
    t0 = last = time.perf_counter()
    n_done = 0

    def collect(done: list[Any]) -> int:
        for ref, res in zip(done, ray.get(done)):
            sums[str(pending.pop(ref).relative_to(out))] = res["sha256"]
        return sum(int(r["n"]) for r in ray.get(done))

    for path, chunk in jobs:
        if len(pending) >= limit:
            done, _ = ray.wait(list(pending), num_returns=1)
            n_done += collect(done)
        ref = _qa_chunk_task.remote(chunk, path, out / "records", files_ref, QA_SCHEMA,
                                    cfg.data.shard_compression)
        pending[ref] = path
        if time.perf_counter() - last >= PROGRESS_EVERY_S:
            last = time.perf_counter()
            rate = n_done / max(last - t0, 1e-9)
            eta = (total - n_done) / rate if rate > 0 else float("nan")
            print(f"[ecglm.data] qa {n_done}/{total} items joined and written "
                  f"({rate:.1f} items/s, ETA {eta:.0f}s)", flush=True)
    if pending:
        n_done += collect(list(pending))
    if total:
        dt = max(time.perf_counter() - t0, 1e-9)
        print(f"[ecglm.data] qa {n_done} items written in {dt:.1f}s "
              f"({n_done / dt:.1f} items/s)", flush=True)
    return sums


def _build_into(cfg: ExperimentConfig, source: DataSource, digest: str, catalog: pd.DataFrame,
                inputs: str, out: Path, final: Path, previous: Path | None) -> dict:
    """Write records, QA folders, quarantine file and manifest into ``out``. Signals never
    pass through this (driver) process: workers write them, the manifest is merged from
    their per-block results."""
    dcfg = cfg.data
    n_samples = dcfg.n_samples
    splits = dict(zip(catalog["ecg_id"].tolist(), catalog["split"].tolist()))
    fp_of = dict(zip(catalog["ecg_id"].astype(int).tolist(), catalog["source_fp"].tolist()))
    schema = record_schema(dcfg.dataset)
    records_dir = out / "records"
    records_dir.mkdir(parents=True, exist_ok=True)
    reused, reused_bad = reuse_previous(previous, fp_of, records_dir, schema,
                                        dcfg.shard_compression)
    reused_ids = set(reused_bad) | {int(e) for e in _ids_of(records_dir, reused)}
    if reused_ids:
        print(f"[ecglm.data] {len(reused_ids)} unchanged records taken from the previous build")
    todo = catalog[~catalog["ecg_id"].isin(reused_ids)]
    t0 = time.perf_counter()
    read = merge_block_results(_records_stage(cfg, todo, records_dir, schema))
    dt = max(time.perf_counter() - t0, 1e-9)
    if read.n_in != len(todo):
        raise RuntimeError(f"shard build: {len(todo)} records went in, block results account "
                           f"for {read.n_in}")
    n_read_bytes = int(todo["source_bytes"].sum())
    print(f"[ecglm.data] read {read.n_in} records in {dt:.1f}s ({read.n_in / dt:.1f} "
          f"records/s, {n_read_bytes / dt / 1e6:.1f} MB/s): {read.n_ok} ok, "
          f"{len(read.quarantine)} quarantined", flush=True)
    kept = merge_block_results(reused)
    files = sorted(read.files + kept.files)
    if not files:
        _write_empty(records_dir, schema)

    quarantine = read.quarantine + [{"id": f"ecg:{e}", "reason": r, "fp": fp_of[e]}
                                    for e, r in sorted(reused_bad.items())]
    if "record" in catalog.columns:  # original record names of non-PTB-XL datasets
        name_of = dict(zip(catalog["ecg_id"].astype(int).tolist(), catalog["record"]))
        quarantine = [{**q, "record": name_of[int(q["id"][4:])]} for q in quarantine]
    n_rec_bad = len(quarantine)
    bad_ids = {int(q["id"][4:]) for q in quarantine}
    n_flagged = read.n_flagged + kept.n_flagged
    patient_of = dict(zip(catalog["ecg_id"].tolist(), catalog["patient_id"].tolist()))
    qa_source = load_qa_items(dcfg, source.root, set(catalog["ecg_id"].tolist()))
    qa_items = select_items(qa_source.items, dcfg.max_items, cfg.seed)
    rows = qa_rows(qa_items, splits, bad_ids, None, patient_of, n_samples, quarantine)
    qa_sums = _qa_stage(cfg, rows, out, files)

    with (out / "quarantine.jsonl").open("w") as fh:
        for entry in quarantine:
            fh.write(json.dumps(entry) + "\n")
    sums = {f"records/{name}": h for name, h in {**read.checksums, **kept.checksums}.items()}
    sums.update(qa_sums)
    sums["quarantine.jsonl"] = sha256_file(out / "quarantine.jsonl")
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
            "records_read": read.n_in, "records_reused": len(reused_ids),
            "qa_in": len(qa_items), "qa_ok": len(qa_items) - n_qa_bad,
            "qa_quarantined": n_qa_bad,
            "per_split": {s: {"records": int((ok_records["split"] == s).sum()),
                              "qa": len(rows[s])} for s in SPLITS},
        },
        "throughput": {"read_seconds": round(dt, 3),
                       "records_per_s": round(read.n_in / dt, 2),
                       "mb_per_s": round(n_read_bytes / dt / 1e6, 3)},
        "inputs": write_input_reports(dcfg, source.root, qa_source, out, final),
        "records": "records", "qa": {s: f"qa/{s}" for s in SPLITS},
        "quarantine": str(final / "quarantine.jsonl"),
        "checksums": dict(sorted(sums.items())),
        "build_seconds": round(time.perf_counter() - t0, 2),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _ids_of(records_dir: Path, results: list[dict[str, Any]]) -> list[int]:
    """ECG ids in the record files named by ``results`` (their ``ecg_id`` column only)."""
    return [e for r in results
            for e in pq.read_table(records_dir / r["file"], columns=["ecg_id"])
            .column("ecg_id").to_pylist()]
