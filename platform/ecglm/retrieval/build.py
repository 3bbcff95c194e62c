"""Build the retrieval artifact shared by training, evaluation and serving.

The artifact folder holds:

* ``encoder.safetensors`` + ``encoder.json``: the *retrieval* encoder (the ECG encoder as it was
  when the index was built: ``encoder.checkpoint`` weights, or a seeded initialisation). Queries at
  serving time must be embedded by this same encoder, even after the model's own encoder was
  fine-tuned.
* ``index.faiss`` + ``reports.json``: :class:`~ecglm.retrieval.index.ReportIndex` over the
  training split.
* ``neighbours.json``: for every record in the shards, the top-k reports of *other* training
  records (never itself, never the same patient when ``retrieval.exclude_same_patient``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file, save_file

from ecglm.config import ExperimentConfig, config_hash, to_dict
from ecglm.config.loader import build_section
from ecglm.config.schema import EncoderConfig
from ecglm.data.shards import ShardSet, decode_signals
from ecglm.models.encoders import CMELTEncoder, build_encoder
from ecglm.retrieval.index import ReportIndex

ENCODER_WEIGHTS = "encoder.safetensors"
ENCODER_CONFIG = "encoder.json"
NEIGHBOURS = "neighbours.json"


@dataclass
class RetrievalArtifact:
    """Paths and contents of a built retrieval folder."""

    folder: Path
    neighbours: dict[int, list[str]]
    """ecg_id -> top-k retrieved reports, best first."""
    neighbour_ids: dict[int, list[int]]
    """ecg_id -> ECG ids of those reports (never the record itself or its patient)."""
    index_size: int


def _record_batches(records: Path, n_samples: int, batch: int) -> Iterator[dict]:
    table = pq.read_table(records, columns=["ecg_id", "patient_id", "split", "report", "signal"])
    rows = table.to_pydict()
    for i in range(0, len(rows["ecg_id"]), batch):
        sig = [decode_signals(b, 1, n_samples)[0] for b in rows["signal"][i : i + batch]]
        yield {
            "ecg_id": rows["ecg_id"][i : i + batch],
            "patient_id": rows["patient_id"][i : i + batch],
            "split": rows["split"][i : i + batch],
            "report": rows["report"][i : i + batch],
            "signal": np.stack(sig),
        }


@torch.no_grad()
def embed(encoder: CMELTEncoder, signals: np.ndarray) -> np.ndarray:
    """Pooled encoder embeddings.

    Args:
        encoder: the retrieval encoder (put in eval mode here).
        signals: ``(B, 12, T)`` float32 mV.

    Returns:
        ``(B, d)`` float32.
    """
    encoder.eval()
    return encoder(torch.from_numpy(np.ascontiguousarray(signals))).pooled.float().numpy()


def retrieval_encoder(cfg: ExperimentConfig) -> CMELTEncoder:
    """The encoder used for retrieval: ``encoder.checkpoint`` or a ``seed``-initialised one."""
    torch.manual_seed(cfg.seed)
    return build_encoder(cfg.encoder).eval()


def load_retrieval_encoder(folder: str | Path) -> CMELTEncoder:
    """Rebuild the retrieval encoder saved in an artifact folder."""
    folder = Path(folder)
    enc_cfg = build_section(EncoderConfig, json.loads((folder / ENCODER_CONFIG).read_text()), "encoder")
    enc_cfg.checkpoint = None
    enc = build_encoder(enc_cfg)
    enc.load_state_dict(load_file(str(folder / ENCODER_WEIGHTS)))
    return enc.eval()


def build_retrieval(cfg: ExperimentConfig, shards: ShardSet) -> RetrievalArtifact:
    """Embed every record, index the training split, precompute neighbours (cached by hash)."""
    key = config_hash(
        {"shards": shards.manifest.get("config_hash"), "encoder": to_dict(cfg.encoder),
         "seed": cfg.seed, "retrieval": to_dict(cfg.retrieval), "format": 2}
    )
    folder = shards.root / f"retrieval-{key}"
    if (folder / NEIGHBOURS).exists():
        index = ReportIndex.load(folder)
        print(f"[retrieval] reusing {folder} ({len(index)} indexed records)")
        return _artifact(folder, json.loads((folder / NEIGHBOURS).read_text()), len(index))

    t0 = time.perf_counter()
    encoder = retrieval_encoder(cfg)
    ids, pats, splits, reports, embs = [], [], [], [], []
    for b in _record_batches(shards.records, cfg.data.n_samples, batch=16):
        embs.append(embed(encoder, b["signal"]))
        ids += b["ecg_id"]
        pats += b["patient_id"]
        splits += b["split"]
        reports += b["report"]
    emb = np.concatenate(embs) if embs else np.zeros((0, cfg.encoder.d_model), np.float32)
    train = [i for i, s in enumerate(splits) if s == "train"]
    index = ReportIndex(emb.shape[1])
    index.add(emb[train], [ids[i] for i in train], [reports[i] for i in train],
              [pats[i] for i in train])
    hits = index.search(
        emb, cfg.retrieval.top_k, exclude_ids=ids,
        exclude_patients=pats if cfg.retrieval.exclude_same_patient else None,
    )
    table = {str(i): [{"ecg_id": h.ecg_id, "report": h.report, "score": h.score} for h in hs]
             for i, hs in zip(ids, hits)}
    tmp = folder.with_name(folder.name + ".tmp")
    index.save(tmp)
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()},
              str(tmp / ENCODER_WEIGHTS))
    (tmp / ENCODER_CONFIG).write_text(json.dumps(to_dict(cfg.encoder)))
    (tmp / NEIGHBOURS).write_text(json.dumps(table))
    tmp.rename(folder)
    dt = time.perf_counter() - t0
    print(f"[retrieval] embedded {len(ids)} records ({len(ids) / max(dt, 1e-9):.1f} rec/s), "
          f"indexed {len(train)} training records -> {folder}")
    return _artifact(folder, table, len(index))


def _artifact(folder: Path, table: dict[str, list[dict]], size: int) -> RetrievalArtifact:
    return RetrievalArtifact(
        folder,
        {int(k): [h["report"] for h in v] for k, v in table.items()},
        {int(k): [int(h["ecg_id"]) for h in v] for k, v in table.items()},
        size,
    )
