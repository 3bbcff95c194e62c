"""``train_loop_per_worker``: what every Ray Train worker runs.

Each worker builds the same model (same seed), wraps it (DDP or DeepSpeed), streams its share of
the ``train`` dataset shard, and every ``train.eval_every`` steps (and at the end) computes the
validation loss over its ``valid`` shard, all-reduces it and reports metrics through
``ray.train.report`` (rank 0 attaches a checkpoint of the trainable parts). Rank 0 also logs step
metrics to the MLflow run whose id the driver passed in.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from ecglm.config import ExperimentConfig, dump_yaml, from_dict
from ecglm.tracking.mlflow_run import log_metrics
from ecglm.data.rows import ECGRow
from ecglm.tasks import Task, get_task
from ecglm.tasks.encode import train_batch
from ecglm.utils.ray_env import set_process_env

TRAINABLE_FILE = "trainable.safetensors"
STATE_FILE = "state.json"
CONFIG_FILE = "config.yaml"


def _rows(shard: Any, batch_size: int, seed: int, task: Task) -> Iterator[list[ECGRow]]:
    """Endless stream of full row batches; a new seeded local shuffle every epoch.

    The last partial batch of an epoch is dropped (every step sees ``batch_size`` examples;
    BatchNorm encoders such as MEIT's cannot train on a batch of one), and a new shuffle puts
    those rows in next epoch's batches.
    """
    epoch = 0
    while True:
        n = 0
        for df in shard.iter_batches(batch_size=batch_size, batch_format="pandas",
                                     local_shuffle_buffer_size=256,
                                     local_shuffle_seed=seed + epoch, drop_last=True):
            n += len(df)
            yield task.rows(df.to_dict("records"))
        if n == 0:
            raise RuntimeError(f"train dataset shard has fewer rows than train.batch_size="
                               f"{batch_size}: no full batch reached this worker")
        epoch += 1


def _all_reduce(values: list[float], op: Any = None) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t.tolist()


@torch.no_grad()
def validation_loss(strategy: Any, rows: list[ECGRow], tokenizer: Any, cfg: ExperimentConfig,
                    fallback: list[ECGRow]) -> float:
    """Token-weighted mean answer loss over every worker's validation rows.

    Every rank runs the same number of forwards (ZeRO-3 gathers parameters collectively):
    ranks with fewer batches repeat ``fallback`` with weight 0.
    """
    bs = cfg.train.batch_size
    local = [rows[i : i + bs] for i in range(0, len(rows), bs)]
    (n_max,) = _all_reduce([float(len(local))], dist.ReduceOp.MAX if dist.is_initialized() else None)
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
    total, count = _all_reduce([total, count])
    return total / count if count > 0 else float("nan")


def _save_checkpoint(folder: Path, state: dict[str, torch.Tensor], cfg: ExperimentConfig,
                     step: int, metrics: dict[str, float]) -> None:
    save_file({k: v.contiguous().cpu() for k, v in state.items()}, str(folder / TRAINABLE_FILE))
    (folder / CONFIG_FILE).write_text(dump_yaml(cfg))
    (folder / STATE_FILE).write_text(json.dumps({"step": step, "metrics": metrics}))


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point.

    ``loop_config``: ``{"config": <nested ExperimentConfig dict>, "mlflow_run_id": str | None}``.
    """
    import ray.train

    from ecglm.models.ecg_lm import build_ecg_lm
    from ecglm.train.strategies import build_strategy

    set_process_env()
    cfg: ExperimentConfig = from_dict(loop_config["config"])
    run_id = loop_config.get("mlflow_run_id")
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.set_num_threads(max(1, int(cfg.train.cpus_per_worker)))
    torch.manual_seed(cfg.seed)  # identical initialisation on every rank
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
            loss_sum, n_sum, seen_all = _all_reduce([window_loss, float(window_n), float(seen)])
            elapsed = time.perf_counter() - t_start
            metrics = {"train_loss": loss_sum / max(n_sum, 1.0), "lr": strategy.lr(),
                       "examples_per_s": seen_all / elapsed}
            window_loss, window_n = 0.0, 0
            if rank == 0:
                eta = elapsed / step * (cfg.train.max_steps - step)
                print(f"[train] step {step}/{cfg.train.max_steps} loss {metrics['train_loss']:.4f} "
                      f"{metrics['examples_per_s']:.2f} ex/s ETA {eta:.0f}s", flush=True)
                if run_id:
                    log_metrics(cfg.tracking.tracking_uri, run_id, metrics, step)
        if step in eval_points:
            val = validation_loss(strategy, valid_rows, tokenizer, cfg, first)
            state = strategy.trainable_state_dict()  # collective under ZeRO-3
            report = {"step": step, "val_loss": val, "train_loss": float(out.loss.detach()),
                      "mlflow_run_id": run_id or ""}
            if rank == 0 and run_id:
                log_metrics(cfg.tracking.tracking_uri, run_id, {"val_loss": val}, step)
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint = None
                if rank == 0:
                    _save_checkpoint(Path(tmp), state, cfg, step, report)
                    checkpoint = ray.train.Checkpoint.from_directory(tmp)
                if dist.is_initialized():
                    dist.barrier()
                ray.train.report(report, checkpoint=checkpoint)
