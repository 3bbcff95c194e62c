"""Driver of ``ecglm pretrain``: shards -> texts -> Ray Train (SigLIP) -> encoder -> zero-shot.

1. Resolve paths, start/join Ray, write (or reuse) the record shards.
2. Pair every record with its text (:mod:`ecglm.pretrain.data`); records without text are
   counted per split, printed, logged to MLflow (``data/missing_text/<split>``) and skipped.
3. Frozen text backbone (default): embed every train/valid text and the label prompts once
   here; workers only train the text projection. Trainable backbone: workers run it per batch.
4. ``TorchTrainer`` with ``train.num_workers`` workers (:mod:`ecglm.pretrain.loop`); the train
   split is streamed and split across workers, the valid split goes whole to rank 0.
5. The last epoch's checkpoint is loaded; the ECG encoder's weights are written to
   ``<output_dir>/<name>/<run_id>/<pretrain.output>`` (safetensors, loadable as
   ``encoder.checkpoint``, checked here with a strict load) and logged as an MLflow artifact.
6. Zero-shot superclass AUCs on valid and test (:mod:`ecglm.pretrain.zeroshot`), logged as
   ``zeroshot/<split>/macro_auc`` and ``zeroshot/<split>/auc/<class>``; ``summary.json`` and
   ``pretrain.png`` (loss curves, per-class AUC bars) become artifacts under ``pretrain/``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray.data
import torch
from safetensors.torch import save_file

from ecglm.checkpoint import read_pretrain_checkpoint
from ecglm.config import ExperimentConfig, apply_overrides, to_dict
from ecglm.config.paths import resolve_paths
from ecglm.data.loader import iter_record_batches
from ecglm.data.shards import build_shards
from ecglm.models.encoders import build_encoder
from ecglm.evaluation.classify import SUPERCLASSES
from ecglm.pretrain.data import (PretrainDataError, RecordTexts, label_prompts,
                                 load_statements, read_record_texts)
from ecglm.pretrain.loop import pretrain_loop_per_worker
from ecglm.pretrain.model import SigLIPModel, check_pretrain_config
from ecglm.pretrain.plot import plot_pretrain
from ecglm.pretrain.text import build_text_backbone, embed_texts
from ecglm.pretrain.zeroshot import ZeroShotResult, zero_shot_auc, zero_shot_scores
from ecglm.tracking.tracked import tracked_run
from ecglm.train.runner import CheckpointScore, RunnerSpec, fit_workers
from ecglm.utils.ray_env import init_ray

SUMMARY_FILE = "summary.json"
PLOT_FILE = "pretrain.png"


@dataclass
class PretrainResult:
    """Outcome of :func:`run_pretraining` (paths absolute)."""

    run_id: str
    encoder_path: Path
    """The ECG encoder's weights (safetensors; ``encoder.checkpoint``)."""
    output_dir: Path
    """``<output_dir>/<name>/<run_id>``: checkpoint copy, encoder, summary, plot."""
    metrics: dict[str, float]
    summary: dict[str, Any]


def _resolve(cfg: ExperimentConfig) -> ExperimentConfig:
    cfg = resolve_paths(cfg)
    if cfg.pretrain.text_model_path:
        path = Path(cfg.pretrain.text_model_path).expanduser().resolve()
        cfg = apply_overrides(cfg, {"pretrain.text_model_path": str(path)})
    return cfg


def steps_per_epoch(n_train: int, num_workers: int, batch_size: int) -> int:
    """Full batches per worker per epoch (``streaming_split`` gives every worker
    ``n_train // num_workers`` records).

    Raises:
        PretrainDataError: a worker would not get one full batch.
    """
    per_worker = n_train // num_workers
    if per_worker < batch_size:
        raise PretrainDataError(
            f"pretrain.batch_size: {batch_size} ECGs per worker, but the train split has "
            f"{n_train} records with text for train.num_workers={num_workers} workers "
            f"({per_worker} each); lower pretrain.batch_size or train.num_workers")
    return per_worker // batch_size


def _keep_ids(ids: list[int]):
    """Ray Data ``map_batches`` function keeping rows whose ``ecg_id`` is in ``ids``."""
    value_set = pa.array(sorted(ids), pa.int64())

    def fn(table: pa.Table) -> pa.Table:
        return table.filter(pc.is_in(table["ecg_id"], value_set=value_set))

    return fn


def _split_dataset(records: Path, ids: list[int]) -> Any:
    ds = ray.data.read_parquet(str(records), columns=["ecg_id", "n_samples", "signal"])
    return ds.map_batches(_keep_ids(ids), batch_format="pyarrow")


@torch.no_grad()
def embed_records(model: SigLIPModel, records: Path, ids: set[int],
                  batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """ECG-tower embeddings of the records in ``ids`` (eval mode): ``(ids (N,), z (N, E))``."""
    model.eval()
    got_ids, parts = [], []
    t0 = time.perf_counter()
    for batch in iter_record_batches(records, batch_size, shuffle=False):
        keep = [i for i, e in enumerate(batch["ecg_id"].tolist()) if e in ids]
        if keep:
            got_ids.extend(batch["ecg_id"][keep].tolist())
            parts.append(model.ecg(batch["signal"][keep]).numpy())
    print(f"[pretrain] embedded {len(got_ids)} ECGs for zero-shot evaluation in "
          f"{time.perf_counter() - t0:.1f}s", flush=True)
    e = model.ecg.proj.out_features
    return np.array(got_ids, np.int64), (np.concatenate(parts) if parts else np.zeros((0, e)))


@torch.no_grad()
def evaluate_zero_shot(model: SigLIPModel, records: Path, texts: RecordTexts,
                       prompts: Any, splits: tuple[str, ...] = ("valid", "test"),
                       batch_size: int = 32) -> dict[str, ZeroShotResult]:
    """Zero-shot AUCs of every record of each split (text or not: labels come from the SCP
    codes). ``prompts``: the label prompts' features ``(C, H)`` or strings."""
    split_of = {e: s for e, s in zip(texts.ecg_ids, texts.splits) if s in splits}
    row = {e: i for i, e in enumerate(texts.ecg_ids)}
    ids, z = embed_records(model, records, set(split_of), batch_size)
    prompt_z = model.text(prompts).numpy()
    out = {}
    for s in splits:
        sel = [i for i, e in enumerate(ids.tolist()) if split_of[e] == s]
        y = texts.labels[[row[int(ids[i])] for i in sel]].reshape(len(sel), len(SUPERCLASSES))
        out[s] = zero_shot_auc(zero_shot_scores(z[sel], prompt_z), y)
    return out


def run_pretraining(cfg: ExperimentConfig, *, run_name: Optional[str] = None) -> PretrainResult:
    """Pretrain ``cfg.encoder`` contrastively against text and track it in MLflow (see the
    module docstring).

    Raises:
        ConfigError: ``encoder.name`` is not a time-series encoder.
        PretrainDataError: a split has no record with text, or the batch does not fit.
    """
    t_start = time.perf_counter()
    check_pretrain_config(cfg)
    cfg = _resolve(cfg)
    pcfg = cfg.pretrain
    init_ray(cfg.train.ray_num_cpus)
    shards = build_shards(cfg)
    statements, where = load_statements([shards.manifest.get("source", ""),
                                         cfg.data.shared_root])
    texts = read_record_texts(shards.records, statements, pcfg.text_source)
    counts = texts.counts()
    for s, c in counts.items():
        print(f"[pretrain] {s}: {c['records']} records, {c['with_text']} with text, "
              f"{c['missing_text']} skipped (no {pcfg.text_source} text)", flush=True)
    texts.require()
    n_steps = steps_per_epoch(counts["train"]["with_text"], cfg.train.num_workers,
                              pcfg.batch_size)
    n_samples = int(round(cfg.data.fs * cfg.data.seconds))

    backbone = build_text_backbone(cfg)
    used = sorted({t for e, s, t in zip(texts.ecg_ids, texts.splits, texts.texts)
                   if t and s in ("train", "valid")})
    row_of = {t: i for i, t in enumerate(used)}
    text_index = {e: row_of[t] for e, s, t in zip(texts.ecg_ids, texts.splits, texts.texts)
                  if t and s in ("train", "valid")}
    prompts = label_prompts(pcfg.label_prompt, statements)
    frozen = not pcfg.train_text_encoder
    text_features = embed_texts(backbone, used, label="texts").numpy() if frozen else None
    prompt_features = embed_texts(backbone, prompts, label="prompts") if frozen else None
    valid_ids = texts.ids("valid")
    labels = {e: texts.labels[i].tolist() for i, e in enumerate(texts.ecg_ids)
              if texts.splits[i] == "valid"}

    with tracked_run(cfg, run_name or f"{cfg.name}-pretrain", tags={
            "ecglm.stage": "pretrain",
            "ecglm.data_source": str(shards.manifest.get("kind"))}) as run:
        run_id = run.run_id
        run.log_metrics({f"data/{k}/{s}": float(v) for s, c in counts.items()
                         for k, v in c.items()})
        run.log_dict({"counts": counts, "statements": where, "prompts": prompts},
                     "pretrain/data.json")
        loop_config = {
            "config": to_dict(cfg), "mlflow_run_id": run_id, "steps_per_epoch": n_steps,
            "n_samples": n_samples, "text_index": text_index, "texts": used,
            "text_features": text_features, "text_dim": backbone.out_dim, "labels": labels,
            "prompts": prompts,
            "prompt_features": None if prompt_features is None else prompt_features.numpy()}
        datasets = {"train": _split_dataset(shards.records, texts.ids("train")),
                    "valid": _split_dataset(shards.records, valid_ids)}
        spec = RunnerSpec.from_train(cfg.train, f"{cfg.name}-pretrain-{run_id[:8]}",
                                     CheckpointScore(num_to_keep=1),
                                     datasets_to_split=["train"])
        out_dir = Path(cfg.output_dir) / cfg.name / run_id
        local = fit_workers(pretrain_loop_per_worker, loop_config, datasets, spec,
                            out_dir / "checkpoint").checkpoint_dir

        model = SigLIPModel(cfg, backbone.out_dim, None if frozen else backbone)
        state, history = read_pretrain_checkpoint(local)
        model.load_state_dict(state, strict=True)
        model.eval()
        encoder_path = out_dir / pcfg.output
        save_file(model.encoder_state_dict(), str(encoder_path))
        verify_encoder_file(cfg, encoder_path)
        zs = evaluate_zero_shot(model, shards.records, texts,
                                prompt_features if frozen else prompts)
        metrics: dict[str, float] = {}
        for split, res in zs.items():
            metrics.update(res.metrics(f"zeroshot/{split}"))
        final_step = int(history["steps"][-1][0]) if history["steps"] else 0
        run.log_metrics(metrics, final_step)
        summary = {
            "run_id": run_id, "encoder_path": str(encoder_path), "checkpoint_dir": str(local),
            "wall_s": round(time.perf_counter() - t_start, 1), "counts": counts,
            "statements": where, "prompts": dict(zip(SUPERCLASSES, prompts)),
            "text_source": pcfg.text_source, "steps": final_step,
            "metrics": metrics,
            "zeroshot": {s: dataclasses.asdict(r) for s, r in zs.items()},
            "history": history,
        }
        (out_dir / SUMMARY_FILE).write_text(json.dumps(_json_safe(summary), indent=2))
        plot_pretrain(history, zs, out_dir / PLOT_FILE)
        report = out_dir / "report"
        report.mkdir(exist_ok=True)
        for name in (SUMMARY_FILE, PLOT_FILE):
            shutil.copy2(out_dir / name, report / name)
        run.log_artifacts(report, "pretrain")
        enc_art = out_dir / "encoder"
        enc_art.mkdir(exist_ok=True)
        shutil.copy2(encoder_path, enc_art / encoder_path.name)
        (enc_art / "encoder_config.json").write_text(json.dumps(to_dict(cfg.encoder), indent=2))
        run.log_artifacts(enc_art, "encoder")
        run.set_tags({"ecglm.stage": "pretrained",
                      "ecglm.encoder_checkpoint": str(encoder_path)})
    return PretrainResult(run_id, encoder_path, out_dir, metrics, summary)


def verify_encoder_file(cfg: ExperimentConfig, path: Path) -> None:
    """Build ``cfg.encoder`` with ``checkpoint=path`` (strict load; raises
    ``CheckpointError`` when the file does not fit)."""
    build_encoder(dataclasses.replace(cfg.encoder, checkpoint=str(path)), fs=float(cfg.data.fs),
                  cache_dir=cfg.llm.cache_dir)


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
