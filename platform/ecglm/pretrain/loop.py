"""``pretrain_loop_per_worker``: what every Ray Train worker runs during ``ecglm pretrain``.

Every worker builds the same :class:`~ecglm.pretrain.model.SigLIPModel` (same seed), wraps it
in DDP (``ray.train.torch.prepare_model``; gloo on CPU), and streams its share of the ``train``
records (Ray Data ``streaming_split``) in batches of ``pretrain.batch_size`` ECGs, incomplete
batches dropped, ``steps_per_epoch`` steps per epoch on every worker (the same count on every
rank, so collectives never wait for a worker that ran out of data). Text of each ECG: cached
features of a frozen text backbone (looked up by ``ecg_id``) or the raw text (trainable
backbone). Per step: leads masked at random inside the ECG tower, SigLIP loss against the texts
of all workers (:func:`~ecglm.pretrain.loss.distributed_siglip_loss`), AdamW, warmup + cosine,
gradient clipping (``train.grad_clip``).

After every epoch rank 0 embeds the whole ``valid`` split (not split across workers, read
once at the start and kept as int16 record batches; no lead masking), computes the validation loss (chunks of the global batch size) and the zero-shot
superclass AUCs, logs them to MLflow and saves ``model.safetensors`` + ``history.json``
(:func:`ecglm.checkpoint.write_pretrain_checkpoint`) as the Ray checkpoint; every rank then
reports once (:func:`ecglm.train.worker.report`). Set-up, optimizer, schedule, clipping and
all-reduce are the runner's (:mod:`ecglm.train.worker`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import ray.train
import ray.train.torch
import torch

from ecglm.checkpoint import write_pretrain_checkpoint
from ecglm.data.loader import MICROVOLT, decode_signal_column
from ecglm.evaluation.classify import SUPERCLASSES
from ecglm.pretrain.loss import chunked_siglip_loss, distributed_siglip_loss
from ecglm.pretrain.model import SigLIPModel, TextInput, param_groups
from ecglm.pretrain.text import build_text_backbone
from ecglm.pretrain.zeroshot import zero_shot_auc, zero_shot_scores
from ecglm.tracking.system_metrics import train_worker_metrics
from ecglm.train.worker import (WorkerContext, all_reduce, clip_and_step, endless_batches,
                                make_adamw, report, start_worker, warmup_schedule)


def decode_batch(table: Any, n_samples: int) -> tuple[np.ndarray, torch.Tensor]:
    """A pyarrow batch of record rows -> ``(ecg_ids (B,), signals float32 (B, 12, T) mV)``."""
    ids = np.asarray(table.column("ecg_id").to_numpy(), dtype=np.int64)
    raw = decode_signal_column(table.column("signal"), n_samples)
    return ids, torch.from_numpy(raw.astype(np.float32) * MICROVOLT)


class TextLookup:
    """Text side of a batch by ``ecg_id``: cached features ``(B, H)`` or the strings."""

    def __init__(self, index: dict[int, int], texts: list[str],
                 features: Optional[np.ndarray]) -> None:
        self.index = {int(k): int(v) for k, v in index.items()}
        self.texts = texts
        self.features = None if features is None else torch.from_numpy(
            np.array(features, dtype=np.float32, copy=True))

    def __call__(self, ids: np.ndarray) -> TextInput:
        rows = [self.index[int(e)] for e in ids]
        if self.features is not None:
            return self.features[rows]
        return [self.texts[r] for r in rows]


def _train_batches(shard: Any, batch_size: int, seed: int) -> Iterator[Any]:
    """Endless full pyarrow batches of the worker's shard, a new seeded local shuffle per pass."""
    return endless_batches(shard, batch_size, seed, "pyarrow", "pretrain.batch_size")


@torch.no_grad()
def embed_split(model: SigLIPModel, batches: Iterator[Any], n_samples: int,
                lookup: TextLookup) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """ECG and text embeddings of a split in eval mode: ``(ids (N,), z_ecg (N, E),
    z_text (N, E))``."""
    model.eval()
    ids_all, ze, zt = [], [], []
    dev = model.logit_scale.device
    for table in batches:
        ids, x = decode_batch(table, n_samples)
        ids_all.append(ids)
        ze.append(model.ecg(x.to(dev)).cpu())
        zt.append(model.text(lookup(ids)).cpu())
    model.train()
    if not ids_all:
        e = model.text.proj.out_features
        return np.zeros(0, np.int64), torch.zeros(0, e), torch.zeros(0, e)
    return np.concatenate(ids_all), torch.cat(ze), torch.cat(zt)


@torch.no_grad()
def prompt_embeddings(model: SigLIPModel, prompts: TextInput) -> np.ndarray:
    """Text-tower embeddings ``(C, E)`` of the zero-shot label prompts."""
    model.eval()
    out = model.text(prompts).cpu().numpy()
    model.train()
    return out


def validate(model: SigLIPModel, tables: list[Any], n_samples: int, lookup: TextLookup,
             labels: dict[int, list[int]], prompts: TextInput, chunk: int) -> dict[str, Any]:
    """Validation loss and zero-shot AUCs on the whole ``valid`` split (rank 0), given as
    pyarrow record batches."""
    ids, ze, zt = embed_split(model, iter(tables), n_samples, lookup)
    loss = chunked_siglip_loss(ze, zt, model.logit_scale.detach().cpu(),
                               model.logit_bias.detach().cpu(), chunk)
    y = np.array([labels[int(e)] for e in ids], dtype=np.int64).reshape(len(ids),
                                                                         len(SUPERCLASSES))
    zs = zero_shot_auc(zero_shot_scores(ze.numpy(), prompt_embeddings(model, prompts)), y)
    return {"valid_loss": loss, "zeroshot": zs}


def _finite(v: float) -> Optional[float]:
    """``v``, or ``None`` when NaN/inf (JSON has no NaN)."""
    return float(v) if math.isfinite(v) else None


def pretrain_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point.

    ``loop_config`` keys: ``config`` (nested ExperimentConfig dict), ``mlflow_run_id``,
    ``steps_per_epoch``, ``n_samples`` (samples per lead), ``text_index`` (ecg_id -> row of
    ``texts``), ``texts``, ``text_features`` ((U, H) array or None when the backbone trains),
    ``text_dim`` (H), ``labels`` (ecg_id -> C 0/1 labels, valid records), ``prompts`` and
    ``prompt_features`` ((C, H) or None).

    The worker with local rank 0 of each node samples system metrics into the run
    (``tracking.system_metrics``).
    """
    worker = start_worker(loop_config)  # seeds torch: identical initialisation on every rank
    with train_worker_metrics(worker.cfg.tracking, worker.run_id):
        _pretrain(worker, loop_config)


def _pretrain(worker: WorkerContext, loop_config: dict[str, Any]) -> None:
    """The pretraining loop of :func:`pretrain_loop_per_worker` on a started worker."""
    cfg, run_id, rank, world = worker.cfg, worker.run_id, worker.rank, worker.world_size
    pcfg = cfg.pretrain
    backbone = build_text_backbone(cfg) if pcfg.train_text_encoder else None
    model = SigLIPModel(cfg, int(loop_config["text_dim"]), backbone)
    wrapped = ray.train.torch.prepare_model(
        model, parallel_strategy_kwargs={"find_unused_parameters": False})
    torch.manual_seed(cfg.seed + 1 + 1000 * rank)  # different lead masks per rank
    opt = make_adamw(param_groups(model, pcfg.weight_decay), pcfg.lr)
    steps_per_epoch = int(loop_config["steps_per_epoch"])
    total = pcfg.epochs * steps_per_epoch
    sched = warmup_schedule(opt, "cosine", int(pcfg.warmup_ratio * total), total)
    n_samples = int(loop_config["n_samples"])
    lookup = TextLookup(loop_config["text_index"], loop_config["texts"],
                        loop_config["text_features"])
    prompts: TextInput = (loop_config["prompts"] if loop_config["prompt_features"] is None
                          else torch.from_numpy(np.asarray(loop_config["prompt_features"],
                                                           dtype=np.float32)))
    labels = {int(k): v for k, v in loop_config["labels"].items()}
    dev = model.logit_scale.device
    batches = _train_batches(ray.train.get_dataset_shard("train"), pcfg.batch_size,
                             cfg.seed + 1000 * rank)
    trainable = [p for p in model.parameters() if p.requires_grad]
    valid_tables: list[Any] = []  # rank 0 reads the valid split once (int16 signals)
    if rank == 0:
        valid_tables = list(ray.train.get_dataset_shard("valid").iter_batches(
            batch_size=pcfg.batch_size, batch_format="pyarrow"))
    history: dict[str, list] = {"steps": [], "epochs": []}
    t0, step, seen = time.perf_counter(), 0, 0
    model.train()
    for epoch in range(1, pcfg.epochs + 1):
        for _ in range(steps_per_epoch):
            ids, x = decode_batch(next(batches), n_samples)
            z_ecg, z_txt, scale, bias = wrapped(x.to(dev), lookup(ids))
            loss = distributed_siglip_loss(z_ecg, z_txt, scale, bias)
            loss.backward()
            clip_and_step(opt, sched, trainable, cfg.train.grad_clip)
            step += 1
            seen += len(ids)
            if step % cfg.train.log_every == 0 or step == total:
                loss_sum, seen_all = all_reduce([float(loss.detach()), float(seen)])
                if rank == 0:
                    elapsed = time.perf_counter() - t0
                    m = {"train_loss": loss_sum / world, "logit_scale": float(scale.detach()),
                         "logit_bias": float(bias.detach()), "lr": float(sched.get_last_lr()[0]),
                         "examples_per_s": seen_all / elapsed}
                    history["steps"].append([step, m["train_loss"]])
                    print(f"[pretrain] epoch {epoch}/{pcfg.epochs} step {step}/{total} "
                          f"loss {m['train_loss']:.4f} t {m['logit_scale']:.3f} "
                          f"b {m['logit_bias']:.3f} {m['examples_per_s']:.1f} ex/s "
                          f"ETA {elapsed / step * (total - step):.0f}s", flush=True)
                    worker.log_metrics(m, step)
        reported: dict[str, Any] = {"epoch": epoch, "step": step, "mlflow_run_id": run_id or ""}
        if rank == 0:
            val = validate(model, valid_tables, n_samples, lookup, labels, prompts,
                           world * pcfg.batch_size)
            zs = val["zeroshot"]
            # per-epoch curve over the valid records with text; the final zeroshot/<split>/
            # metrics (run.py) cover every record of the split
            metrics = {"valid_loss": val["valid_loss"], **zs.metrics("epoch/zeroshot/valid")}
            reported.update({"valid_loss": val["valid_loss"],
                             "zeroshot_valid_macro_auc": zs.macro_auc})
            history["epochs"].append({"epoch": epoch, "step": step,
                                      "valid_loss": _finite(val["valid_loss"]),
                                      "valid_macro_auc": _finite(zs.macro_auc),
                                      "valid_auc": zs.per_class})
            print(f"[pretrain] epoch {epoch}/{pcfg.epochs} valid loss "
                  f"{val['valid_loss']:.4f} zero-shot macro AUC "
                  f"{zs.macro_auc:.3f} ({zs.n_classes_used} classes, "
                  f"{zs.n_records} records)", flush=True)
            worker.log_metrics(metrics, step)

        def write(folder: Path) -> None:
            write_pretrain_checkpoint(folder, model.state_dict(), history)

        report(reported, rank, write)
