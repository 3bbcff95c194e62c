"""``train_loop_per_worker``: what every Ray Train worker runs.

Each worker builds the same model (same seed), wraps it (DDP or DeepSpeed), streams its share of
the ``train`` dataset shard, and every ``train.eval_every`` steps (and at the end) computes the
validation loss over its ``valid`` shard, all-reduces it and reports metrics through
:func:`ecglm.train.worker.report` (rank 0 attaches a checkpoint of the trainable parts, written
by :func:`ecglm.checkpoint.write_checkpoint`). Rank 0 also logs step metrics to the MLflow run
whose id the driver passed in.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Iterator

import ray.train
import torch

from ecglm.checkpoint import write_checkpoint
from ecglm.config import ExperimentConfig
from ecglm.models.ecg_lm import build_ecg_lm
from ecglm.data.rows import ECGRow
from ecglm.tasks import Task, get_task
from ecglm.tasks.encode import train_batch
from ecglm.train.strategies import build_strategy
from ecglm.train.worker import all_reduce, endless_batches, report, start_worker


def _rows(shard: Any, batch_size: int, seed: int, task: Task) -> Iterator[list[ECGRow]]:
    """Endless stream of full row batches; a new seeded local shuffle every epoch.

    The last partial batch of an epoch is dropped (every step sees ``batch_size`` examples;
    BatchNorm encoders such as MEIT's cannot train on a batch of one), and a new shuffle puts
    those rows in next epoch's batches.
    """
    for df in endless_batches(shard, batch_size, seed, "pandas", "train.batch_size"):
        yield task.rows(df.to_dict("records"))


@torch.no_grad()
def validation_loss(strategy: Any, rows: list[ECGRow], tokenizer: Any, cfg: ExperimentConfig,
                    fallback: list[ECGRow]) -> float:
    """Token-weighted mean answer loss over every worker's validation rows.

    Every rank runs the same number of forwards (ZeRO-3 gathers parameters collectively):
    ranks with fewer batches repeat ``fallback`` with weight 0.
    """
    bs = cfg.train.batch_size
    local = [rows[i : i + bs] for i in range(0, len(rows), bs)]
    (n_max,) = all_reduce([float(len(local))], "max")
    total, count = 0.0, 0.0
    strategy.module.eval()
    for i in range(int(n_max)):
        part, weight = (local[i], 1.0) if i < len(local) else (fallback, 0.0)
        batch = train_batch(get_task(cfg.task), part, tokenizer, cfg, None)
        out = strategy.eval_forward(**batch)
        if weight:  # padding forwards only keep collectives in step (0 * NaN would be NaN)
            n_tok = float((batch["labels"] != -100).sum())
            total += float(out.loss) * n_tok
            count += n_tok
    strategy.module.train()
    total, count = all_reduce([total, count])
    return total / count if count > 0 else float("nan")


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point.

    ``loop_config``: ``{"config": <nested ExperimentConfig dict>, "mlflow_run_id": str | None}``.
    """
    worker = start_worker(loop_config)  # seeds torch: identical initialisation on every rank
    cfg, run_id, rank = worker.cfg, worker.run_id, worker.rank
    model = build_ecg_lm(cfg)
    tokenizer = model.tokenizer
    strategy = build_strategy(model, cfg.train)
    model.train()

    task = get_task(cfg.task)
    train_rows = _rows(ray.train.get_dataset_shard("train"), cfg.train.batch_size,
                       cfg.seed + 1000 * rank, task)
    valid_rows = [r for df in ray.train.get_dataset_shard("valid").iter_batches(
        batch_size=64, batch_format="pandas") for r in task.rows(df.to_dict("records"))]
    rng = random.Random(cfg.seed + rank)
    eval_points = set(range(cfg.train.eval_every, cfg.train.max_steps + 1, cfg.train.eval_every)
                      if cfg.train.eval_every else [])
    eval_points.add(cfg.train.max_steps)

    t_start = time.perf_counter()
    seen = 0
    window_loss, window_n = 0.0, 0
    first = None
    for step in range(1, cfg.train.max_steps + 1):
        rows = next(train_rows)
        first = first or rows
        batch = train_batch(task, rows, tokenizer, cfg, rng)
        out = strategy.forward(**batch)
        strategy.backward_step(out.loss)
        seen += len(rows)
        window_loss += float(out.loss.detach())
        window_n += 1
        if step % cfg.train.log_every == 0 or step in eval_points:
            loss_sum, n_sum, seen_all = all_reduce([window_loss, float(window_n), float(seen)])
            elapsed = time.perf_counter() - t_start
            metrics = {"train_loss": loss_sum / max(n_sum, 1.0), "lr": strategy.lr(),
                       "examples_per_s": seen_all / elapsed}
            window_loss, window_n = 0.0, 0
            if rank == 0:
                eta = elapsed / step * (cfg.train.max_steps - step)
                print(f"[train] step {step}/{cfg.train.max_steps} loss {metrics['train_loss']:.4f} "
                      f"{metrics['examples_per_s']:.2f} ex/s ETA {eta:.0f}s", flush=True)
                worker.log_metrics(metrics, step)
        if step in eval_points:
            val = validation_loss(strategy, valid_rows, tokenizer, cfg, first)
            state = strategy.trainable_state_dict()  # collective under ZeRO-3
            reported = {"step": step, "val_loss": val, "train_loss": float(out.loss.detach()),
                        "mlflow_run_id": run_id or ""}
            worker.log_metrics({"val_loss": val}, step)

            def write(folder: Path) -> None:
                write_checkpoint(folder, state, cfg, step, reported)

            report(reported, rank, write)
