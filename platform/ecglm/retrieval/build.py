"""Build the retrieval artifact shared by training, evaluation and serving.

The artifact folder holds:

* ``encoder.safetensors`` + ``encoder.json``: the *retrieval* encoder (the ECG encoder as it was
  when the index was built: ``encoder.checkpoint`` weights, or a seeded initialisation). Queries at
  serving time must be embedded by this same encoder, even after the model's own encoder was
  fine-tuned. The weights file holds the encoder's *time-series* part only
  (:func:`~ecglm.models.encoders.time_series_part`): the whole encoder for ``cmelt``,
  ``temporal_conv`` and ``ts_transformer``, the ``ts_transformer`` of ``dual``, nothing for
  ``image``. Vision towers (often gigabytes, and frozen) are not copied: they are rebuilt from
  ``encoder.image`` (the same ``path``, or the seeded tiny tower, which is deterministic), so a
  ``path`` tower must still be readable where the artifact is loaded.
* ``encoder_build.json``: the other :func:`~ecglm.models.encoders.build_encoder` arguments
  (``fs``, ``llm_head_dim``, ``cache_dir``); artifacts without it were built with the defaults.
* ``index.faiss`` + ``reports.json``: :class:`~ecglm.retrieval.index.ReportIndex` over the
  training split, of kind ``retrieval.index`` (flat | ivf | hnsw; its build parameters are in
  the cache key, :func:`index_key`). Load it with ``ReportIndex.load(folder, cfg.retrieval)``
  to apply the query-time ``nprobe`` / ``ef_search`` and the GPU placement.
* ``neighbours.json``: for every record in the shards, the top-k reports of *other* training
  records (never itself, never the same patient when ``retrieval.exclude_same_patient``).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pyarrow.parquet as pq
import torch
from safetensors.torch import save_file

from ecglm.config import ExperimentConfig, config_hash, to_dict
from ecglm.config.encoders import encoder_sections
from ecglm.config.loader import build_section
from ecglm.config.schema import EncoderConfig, RetrievalConfig
from ecglm.data.loader import decode_signal_column
from ecglm.data.shards import ShardSet
from ecglm.models.dims import llm_dims
from ecglm.models.encoders import (
    ECGEncoder,
    build_encoder,
    encoder_spec,
    load_encoder_checkpoint,
    time_series_part,
)
from ecglm.retrieval.index import ReportIndex
from ecglm.utils.cache_dirs import write_once

ENCODER_WEIGHTS = "encoder.safetensors"
ENCODER_CONFIG = "encoder.json"
ENCODER_BUILD = "encoder_build.json"
NEIGHBOURS = "neighbours.json"
BATCH = 64
"""Records per embedding batch and per neighbour-search batch."""


@dataclass
class RetrievalArtifact:
    """Paths and contents of a built retrieval folder."""

    folder: Path
    neighbours: dict[int, list[str]]
    """ecg_id -> top-k retrieved reports, best first."""
    neighbour_ids: dict[int, list[int]]
    """ecg_id -> ECG ids of those reports (never the record itself or its patient)."""
    index_size: int


def parquet_files(records: Path) -> list[Path]:
    """The Parquet files of a records table: the folder's ``*.parquet`` in name order, or the
    path itself when it is one file (what ``ray.data.read_parquet`` accepts too)."""
    path = Path(records)
    return [path] if path.is_file() else sorted(path.glob("*.parquet"))


def _record_batches(records: Path, n_samples: int, batch: int) -> Iterator[dict]:
    """Batches of at most ``batch`` records, one Parquet file at a time, never the whole
    folder: ``{"ecg_id", "patient_id", "split", "report": lists, "signal": float32
    (B, 12, n_samples) mV}``."""
    for f in parquet_files(records):
        pf = pq.ParquetFile(f, memory_map=True)
        for rb in pf.iter_batches(batch_size=batch, columns=["ecg_id", "patient_id", "split",
                                                              "report", "signal"]):
            if rb.num_rows == 0:
                continue
            sig = decode_signal_column(rb.column("signal"), n_samples)
            yield {
                "ecg_id": rb.column("ecg_id").to_pylist(),
                "patient_id": rb.column("patient_id").to_pylist(),
                "split": rb.column("split").to_pylist(),
                "report": rb.column("report").to_pylist(),
                "signal": sig.astype(np.float32) / np.float32(1000.0),  # as decode_signals
            }


def _n_records(records: Path) -> int:
    """Rows of a records folder, from the Parquet footers only."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in parquet_files(records))


@torch.no_grad()
def embed(encoder: ECGEncoder, signals: np.ndarray) -> np.ndarray:
    """Pooled encoder embeddings.

    Args:
        encoder: the retrieval encoder (put in eval mode here).
        signals: ``(B, 12, T)`` float32 mV.

    Returns:
        ``(B, d)`` float32.
    """
    encoder.eval()
    param = next(iter(encoder.parameters()), None)  # the signals follow the encoder's device
    x = torch.from_numpy(np.ascontiguousarray(signals))
    x = x if param is None else x.to(param.device)
    return encoder(x).pooled.float().cpu().numpy()


def encoder_build_args(cfg: ExperimentConfig) -> dict[str, Any]:
    """Keyword arguments of :func:`build_encoder` for ``cfg``: ``fs`` (``data.fs``),
    ``llm_head_dim`` (only for ``temporal_conv`` without ``out_dim``: prepares the LLM folder to
    read it) and ``cache_dir`` (``llm.cache_dir``, where a tiny image tower is written)."""
    head_dim = None
    if cfg.encoder.name == "temporal_conv" and cfg.encoder.temporal_conv.out_dim is None:
        head_dim = llm_dims(cfg.llm).head_dim
    return {"fs": float(cfg.data.fs), "llm_head_dim": head_dim, "cache_dir": cfg.llm.cache_dir}


def retrieval_encoder(cfg: ExperimentConfig,
                      build_args: dict[str, Any] | None = None) -> ECGEncoder:
    """The encoder used for retrieval: ``encoder.checkpoint`` or a ``seed``-initialised one.

    ``build_args``: precomputed :func:`encoder_build_args` (computed when ``None``).
    """
    args = encoder_build_args(cfg) if build_args is None else build_args
    torch.manual_seed(cfg.seed)
    return build_encoder(cfg.encoder, **args).eval()


def retrieval_weights(encoder: ECGEncoder) -> dict[str, torch.Tensor]:
    """The state dict stored in ``encoder.safetensors``: the time-series part only (empty for
    an image-only encoder)."""
    part = time_series_part(encoder)
    if part is None:
        return {}
    return {k: v.contiguous() for k, v in part.state_dict().items()}


def load_retrieval_encoder(folder: str | Path) -> ECGEncoder:
    """Rebuild the retrieval encoder saved in an artifact folder.

    Raises:
        CheckpointError: the stored weights do not fit the rebuilt encoder.
    """
    folder = Path(folder)
    enc_cfg = build_section(EncoderConfig, json.loads((folder / ENCODER_CONFIG).read_text()),
                            "encoder")
    enc_cfg.checkpoint = None
    build_file = folder / ENCODER_BUILD
    args = json.loads(build_file.read_text()) if build_file.is_file() else {}
    enc = build_encoder(enc_cfg, **args)
    weights = folder / ENCODER_WEIGHTS
    if time_series_part(enc) is not None:
        load_encoder_checkpoint(enc, weights)
    return enc.eval()


def encoder_key(cfg: ExperimentConfig, args: dict[str, Any]) -> dict[str, Any]:
    """What determines the retrieval encoder's embeddings: the encoder section without the
    sub-sections of other encoders, plus its build arguments ``args``
    (:func:`encoder_build_args`: ``fs``, LLM head dim)."""
    data = to_dict(cfg.encoder)
    own = encoder_spec(cfg.encoder.name).sections  # the sub-sections this encoder reads
    for section in encoder_sections():
        if section not in own:
            data.pop(section, None)
    data["build"] = {"fs": args["fs"], "llm_head_dim": args["llm_head_dim"]}
    return data


def index_key(retrieval: RetrievalConfig) -> dict[str, Any]:
    """What shapes the saved index and the neighbour table, from the ``retrieval`` section:
    ``top_k``, ``exclude_same_patient``, ``index`` and the build parameters of that kind only
    (ivf ``nlist``; hnsw ``hnsw_m``, ``ef_construction``).

    Not in the key: the query-time ``nprobe`` / ``ef_search`` (applied when the index is loaded,
    ``ReportIndex.load(folder, cfg.retrieval)``; the cached ``neighbours.json`` keeps the values
    it was searched with, which ``reports.json`` records), ``use_gpu``, ``max_report_chars``
    and ``enabled``.
    """
    key: dict[str, Any] = {"top_k": retrieval.top_k,
                           "exclude_same_patient": retrieval.exclude_same_patient,
                           "index": retrieval.index}
    if retrieval.index == "ivf":
        key["nlist"] = retrieval.nlist
    elif retrieval.index == "hnsw":
        key.update(hnsw_m=retrieval.hnsw_m, ef_construction=retrieval.ef_construction)
    return key


def artifact_key(cfg: ExperimentConfig, shards_hash: Optional[str],
                 build_args: dict[str, Any]) -> str:
    """Cache key of the retrieval folder (``<shards>/retrieval-<key>``): the shards, the
    retrieval encoder (:func:`encoder_key`), the seed and :func:`index_key`."""
    return config_hash({"shards": shards_hash, "encoder": encoder_key(cfg, build_args),
                        "seed": cfg.seed, "retrieval": index_key(cfg.retrieval), "format": 4})


def _query_params_note(index: ReportIndex, retrieval: RetrievalConfig) -> str:
    """A note when ``retrieval``'s query-time parameters differ from those the cached
    neighbour table was searched with (empty otherwise)."""
    desc = index.describe()
    want = {"ivf": {"nprobe": retrieval.nprobe},
            "hnsw": {"ef_search": retrieval.ef_search}}.get(index.kind, {})
    diff = {k: (desc.get(k), v) for k, v in want.items() if desc.get(k) != v}
    if not diff:
        return ""
    parts = ", ".join(f"{k}={old} (config: {new})" for k, (old, new) in diff.items())
    return (f"; its neighbours.json was searched with {parts}: the config's values apply when "
            f"the index is loaded with the config (serving), the cached table is kept")


def build_retrieval(cfg: ExperimentConfig, shards: ShardSet) -> RetrievalArtifact:
    """Embed every record, index the training split with the ``retrieval.index`` kind,
    precompute neighbours (cached by :func:`artifact_key`)."""
    build_args = encoder_build_args(cfg)
    key = artifact_key(cfg, shards.manifest.get("config_hash"), build_args)
    folder = shards.root / f"retrieval-{key}"
    if (folder / NEIGHBOURS).exists():
        index = ReportIndex.load(folder)
        print(f"[retrieval] reusing {folder} ({len(index)} indexed records, {index.kind} "
              f"index{_query_params_note(index, cfg.retrieval)})")
        return _artifact(folder, json.loads((folder / NEIGHBOURS).read_text()), len(index))

    t0 = time.perf_counter()
    encoder = retrieval_encoder(cfg, build_args)
    with tempfile.TemporaryDirectory(prefix="ecglm-retrieval-") as scratch:
        table, n_train, index = _embed_and_search(cfg, encoder, shards.records,
                                                  Path(scratch) / "emb.npy")
    n_all = len(table)

    def write(tmp: Path) -> dict[str, Any]:
        index.save(tmp)
        save_file(retrieval_weights(encoder), str(tmp / ENCODER_WEIGHTS))
        (tmp / ENCODER_CONFIG).write_text(json.dumps(to_dict(cfg.encoder)))
        (tmp / ENCODER_BUILD).write_text(json.dumps(build_args))
        (tmp / NEIGHBOURS).write_text(json.dumps(table))
        return {"kind": "retrieval", "key": key}

    # a concurrent build of the same key may win: its (identical) folder is kept
    write_once(folder, write, is_finished=lambda f: (f / NEIGHBOURS).is_file())
    dt = time.perf_counter() - t0
    print(f"[retrieval] embedded {n_all} records ({n_all / max(dt, 1e-9):.1f} rec/s), "
          f"indexed {n_train} training records -> {folder}")
    return _artifact(folder, table, len(index))


def _embed_and_search(cfg: ExperimentConfig, encoder: ECGEncoder, records: Path,
                      scratch: Path) -> tuple[dict[str, list[dict]], int, ReportIndex]:
    """Two streaming passes over the records: (1) embed batches of :data:`BATCH` records and
    park every embedding in a memory-mapped ``(N, d)`` float32 file ``scratch`` (the training
    ones also in ``train_<scratch>``), then build the ``retrieval.index`` index from the
    training embeddings (:meth:`ReportIndex.build`); (2) search the neighbours of every record
    in batches.

    Returns:
        ``(neighbour table {str(ecg_id): [{"ecg_id", "report", "score"}]}, training records
        indexed, index)``.
    """
    n = _n_records(records)
    emb = train_emb = None
    ids: list[int] = []
    pats: list[int] = []
    t_ids: list[int] = []
    t_reports: list[str] = []
    t_pats: list[int] = []
    pos = n_train = 0
    for b in _record_batches(records, cfg.data.n_samples, batch=BATCH):
        e = embed(encoder, b["signal"])
        if emb is None:
            emb = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.float32,
                                            shape=(n, e.shape[1]))
            train_emb = np.lib.format.open_memmap(scratch.with_name("train_" + scratch.name),
                                                  mode="w+", dtype=np.float32,
                                                  shape=(n, e.shape[1]))
        emb[pos:pos + len(e)] = e
        pos += len(e)
        train = [i for i, s in enumerate(b["split"]) if s == "train"]
        if train:
            train_emb[n_train:n_train + len(train)] = e[train]
            n_train += len(train)
            t_ids += [b["ecg_id"][i] for i in train]
            t_reports += [b["report"][i] for i in train]
            t_pats += [b["patient_id"][i] for i in train]
        ids += b["ecg_id"]
        pats += b["patient_id"]
    if emb is None or train_emb is None:
        return {}, 0, ReportIndex(encoder.out_dim, cfg.retrieval)
    # all training vectors at once: an ivf index trains its cells on them before adding
    index = ReportIndex.build(emb.shape[1], cfg.retrieval, train_emb[:n_train], t_ids,
                              t_reports, t_pats)
    # key value pairs, no braces: a command's JSON result is the first "{" on its stdout
    described = ", ".join(f"{k} {v}" for k, v in index.describe().items())
    print(f"[retrieval] index: {described}", flush=True)
    del train_emb
    table: dict[str, list[dict]] = {}
    exclude = cfg.retrieval.exclude_same_patient
    for start in range(0, pos, BATCH):
        stop = min(start + BATCH, pos)
        hits = index.search(np.asarray(emb[start:stop]), cfg.retrieval.top_k,
                            exclude_ids=ids[start:stop],
                            exclude_patients=pats[start:stop] if exclude else None)
        for i, hs in zip(ids[start:stop], hits):
            table[str(i)] = [{"ecg_id": h.ecg_id, "report": h.report, "score": h.score}
                             for h in hs]
    del emb
    return table, len(index), index


def _artifact(folder: Path, table: dict[str, list[dict]], size: int) -> RetrievalArtifact:
    return RetrievalArtifact(
        folder,
        {int(k): [h["report"] for h in v] for k, v in table.items()},
        {int(k): [int(h["ecg_id"]) for h in v] for k, v in table.items()},
        size,
    )
