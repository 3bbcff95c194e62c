"""``train_loop_per_worker``: what every Ray Train worker runs.

Each worker builds the same model (same seed), wraps it (DDP or DeepSpeed), streams its share of
the ``train`` dataset shard, and does ``train.max_steps`` optimizer steps of
``train.grad_accum_steps`` micro-batches each. Every ``train.eval_every`` steps (and at the
end) it computes the validation loss over its ``valid`` shard and all-reduces it; at those
points and every ``train.checkpoint_every`` steps every rank writes its part of a resumable
checkpoint (:mod:`ecglm.checkpoint`) and reports through :func:`ecglm.train.worker.report`.
Rank 0 logs step metrics to the MLflow run whose id the driver passed in.

Resume: the loop starts from ``ray.train.get_checkpoint()`` (a restart after a worker failure,
``train.max_failures``) or else from ``loop_config["resume_from"]`` (``ecglm train --resume``)
and restores weights, optimizer, schedule, RNG states, data position and step
(:func:`restore`). Checkpoints written at steps without evaluation report ``val_loss: NaN``:
Ray ranks them last and the run never keeps them as "best" (Ray always keeps the latest one,
which restarts need).
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

import ray.train
import torch

from ecglm.checkpoint import (read_rank_state, read_state, read_trainable, write_checkpoint,
                              write_rank_state)
from ecglm.config import ExperimentConfig
from ecglm.data.rows import ECGRow
from ecglm.tasks import Task, get_task
from ecglm.tasks.encode import train_batch
from ecglm.tracking.system_metrics import train_worker_metrics
from ecglm.train.strategies import backward_micro_batches, build_strategy
from ecglm.train.worker import (BatchStream, WorkerContext, all_reduce, report, rng_state,
                                set_base_lr, set_rng_state, start_worker)

def _rows(stream: BatchStream, task: Task) -> Iterator[list[ECGRow]]:
    """Endless stream of full row batches; a new seeded local shuffle every epoch.

    The last partial batch of an epoch is dropped (every step sees ``batch_size`` examples;
    BatchNorm encoders such as MEIT's cannot train on a batch of one), and a new shuffle puts
    those rows in next epoch's batches.
    """
    for df in stream:
        yield task.rows(df.to_dict("records"))


def valid_batches(shard: Any, task: Task,
                  batch_size: int) -> Callable[[], Iterator[list[ECGRow]]]:
    """A fresh pass over a worker's ``valid`` shard at each call, ``batch_size`` typed rows
    at a time (only one batch's signals in memory)."""
    def batches() -> Iterator[list[ECGRow]]:
        for df in shard.iter_batches(batch_size=batch_size, batch_format="pandas"):
            rows = task.rows(df.to_dict("records"))
            if rows:
                yield rows

    return batches


@torch.no_grad()
def validation_loss(strategy: Any, batches: Iterable[list[ECGRow]], tokenizer: Any,
                    cfg: ExperimentConfig, fallback: list[ECGRow]) -> float:
    """Token-weighted mean answer loss over every worker's validation rows, streamed in
    ``batches`` (lists of rows, each at most ``train.batch_size``).

    Every rank runs the same number of forwards (ZeRO-3 gathers parameters collectively):
    before each forward the ranks agree (all-reduce max) whether any of them still has a
    batch; a rank whose batches ran out forwards ``fallback`` with weight 0.
    """
    it = iter(batches)
    total, count = 0.0, 0.0
    strategy.module.eval()
    while True:
        part = next(it, None)
        (any_left,) = all_reduce([0.0 if part is None else 1.0], "max")
        if not any_left:
            break
        rows, weight = (part, 1.0) if part is not None else (fallback, 0.0)
        batch = strategy.to_device(train_batch(get_task(cfg.task), rows, tokenizer, cfg, None))
        out = strategy.eval_forward(**batch)
        if weight:  # padding forwards only keep collectives in step (0 * NaN would be NaN)
            n_tok = float((batch["labels"] != -100).sum())
            total += float(out.loss) * n_tok
            count += n_tok
    strategy.module.train()
    total, count = all_reduce([total, count])
    return total / count if count > 0 else float("nan")


@dataclass
class Start:
    """Where this worker starts: step 0, or a restored checkpoint."""

    step: int = 0
    stream: dict[str, int] = field(default_factory=lambda: {"pass": 0, "consumed": 0})
    restarts: int = 0
    restored: dict[str, Any] = field(default_factory=dict)
    """What was restored (logged by rank 0): ``optimizer``, ``scheduler``, ``rng``, ``data``
    (bools), ``weights_max_abs_diff``, ``from`` (``restart`` or ``resume``)."""


def _resume_checkpoint(loop_config: Mapping[str, Any]) -> tuple[Optional[Any], str]:
    """``(checkpoint, kind)``: Ray's latest checkpoint of this run (``restart``: the worker
    group was restarted after a failure) or else ``loop_config["resume_from"]``
    (``resume``: a checkpoint folder or URI), or ``(None, "")``."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        return checkpoint, "restart"
    ref = loop_config.get("resume_from")
    if ref:
        return ray.train.Checkpoint(str(ref)), "resume"
    return None, ""


def restore(strategy: Any, folder: Path, worker: WorkerContext, rng: random.Random,
            kind: str) -> Start:
    """Restore optimizer/schedule (:meth:`restore` of the strategy), this rank's RNG states and
    data position (same world size only: data shards and RNG streams are per rank), and
    check the weights loaded at build against ``trainable.safetensors``.

    On another world size: weights, schedule and step are restored (DDP: the optimizer too);
    RNG states are re-seeded from ``seed + step`` and the data stream starts fresh shuffles
    (shuffle seeds offset by the step). Collective (ZeRO-3 gathers).
    """
    state = read_state(folder)
    resume = state.resume
    step = int(state.step or 0)
    same_world = int(resume.get("world_size", -1)) == worker.world_size
    restored: dict[str, Any] = dict(strategy.restore(folder, resume, same_world))
    # a trial PBT restarted from a better one's checkpoint with a perturbed train.lr
    restored["lr_rescaled"] = set_base_lr(strategy.scheduler, strategy.optimizer,
                                          worker.cfg.train.lr)
    saved = read_trainable(folder)
    now = strategy.trainable_state_dict()
    diff = max((float((now[k].detach().float().cpu() - v.float()).abs().max())
                for k, v in saved.items() if v.numel()), default=0.0)
    rank_state = read_rank_state(folder, worker.rank) if same_world else None
    if rank_state is not None:
        set_rng_state(rank_state["rng"], {"prompt": rng})
        stream = {k: int(v) for k, v in rank_state["stream"].items()}
    else:
        torch.manual_seed(worker.cfg.seed + step)
        random.seed(worker.cfg.seed + step)
        rng.seed(worker.cfg.seed + worker.rank + step)
        stream = {"pass": step, "consumed": 0}
    restored.update(rng=rank_state is not None, data=rank_state is not None,
                    weights_max_abs_diff=diff, saved_world_size=int(resume.get("world_size", 0)))
    restarts = int(resume.get("restarts", 0)) + (1 if kind == "restart" else 0)
    restored["from"] = kind
    return Start(step, stream, restarts, restored)


def _log_start(worker: WorkerContext, start: Start, where: str) -> None:
    """Rank 0: record a restart (metric and tag ``restarts``) or a resume (metric and tag
    ``resumed_from_step``) and what was restored (``resume/*`` metrics) in the MLflow run."""
    r = start.restored
    metrics = {"resume/optimizer_restored": float(r["optimizer"]),
               "resume/rng_restored": float(r["rng"]), "resume/data_restored": float(r["data"]),
               "resume/weights_max_abs_diff": r["weights_max_abs_diff"],
               "resume/lr_rescaled": float(r.get("lr_rescaled", False))}
    tags = {"ecglm.resumed_from": where, "ecglm.resumed_from_step": str(start.step)}
    if r["from"] == "restart":
        metrics["restarts"] = float(start.restarts)
        tags["ecglm.restarts"] = str(start.restarts)
    else:
        metrics["resumed_from_step"] = float(start.step)
    worker.log_metrics(metrics, start.step)
    worker.set_tags(tags)
    if worker.rank == 0:
        print(f"[train] {r['from']} from step {start.step} ({where}): "
              f"optimizer {'restored' if r['optimizer'] else 're-initialised'}, RNG/data "
              f"{'restored' if r['data'] else 're-seeded'}", flush=True)


def _maybe_fail(fault: Optional[Mapping[str, Any]], rank: int, step: int) -> None:
    """Test hook (``ECGLM_TEST_KILL_AT``, read by the driver): rank ``fault["rank"]`` ends its
    process at ``fault["step"]`` once, remembered by the marker file ``fault["marker"]``."""
    if not fault or rank != int(fault["rank"]) or step != int(fault["step"]):
        return
    marker = Path(fault["marker"])
    if marker.exists():
        return
    marker.write_text(f"killed rank {rank} at step {step}\n")
    os._exit(1)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point.

    ``loop_config``: ``{"config": <nested ExperimentConfig dict>, "mlflow_run_id": str | None,
    "resume_from": checkpoint folder/URI | None, "stop_at_step": int | None,
    "fault": test hook | None}``. ``stop_at_step`` ends the run after that step's checkpoint
    (to continue later with ``--resume``; the schedule still spans ``train.max_steps``).

    The worker with local rank 0 of each node samples system metrics into the run while it
    trains (``tracking.system_metrics``, :mod:`ecglm.tracking.system_metrics`).
    """
    worker = start_worker(loop_config)  # seeds torch: identical initialisation on every rank
    with train_worker_metrics(worker.cfg.tracking, worker.run_id):
        _train(worker, loop_config)


def _train(worker: WorkerContext, loop_config: Mapping[str, Any]) -> None:
    """The training loop of :func:`train_loop_per_worker` on a started worker."""
    cfg, run_id, rank = worker.cfg, worker.run_id, worker.rank
    tc = cfg.train
    rng = random.Random(cfg.seed + rank)
    checkpoint, kind = _resume_checkpoint(loop_config)
    start = Start()
    if checkpoint is None:
        strategy = build_strategy(cfg)
    else:
        with checkpoint.as_directory() as d:
            strategy = build_strategy(cfg, read_trainable(Path(d)))
            start = restore(strategy, Path(d), worker, rng, kind)
        _log_start(worker, start, str(checkpoint.path))
    model = strategy.module
    tokenizer = model.tokenizer
    model.train()

    task = get_task(cfg.task)
    stream = BatchStream(ray.train.get_dataset_shard("train"), tc.batch_size,
                         cfg.seed + 1000 * rank, "pandas", "train.batch_size",
                         start.stream["pass"], start.stream["consumed"])
    train_rows = _rows(stream, task)
    valid_pass = valid_batches(ray.train.get_dataset_shard("valid"), task, tc.batch_size)
    eval_points = set(range(tc.eval_every, tc.max_steps + 1, tc.eval_every)
                      if tc.eval_every else [])
    eval_points.add(tc.max_steps)
    stop_at = loop_config.get("stop_at_step") or tc.max_steps
    checkpoint_points = set(eval_points) | {stop_at}
    if tc.checkpoint_every:
        checkpoint_points |= set(range(tc.checkpoint_every, tc.max_steps + 1,
                                       tc.checkpoint_every))
    fault = loop_config.get("fault")

    t_start = time.perf_counter()
    seen, tokens = 0, 0
    window_loss, window_n = 0.0, 0
    first = None
    for step in range(start.step + 1, min(stop_at, tc.max_steps) + 1):
        micro_rows = [next(train_rows) for _ in range(tc.grad_accum_steps)]
        first = first or micro_rows[0]
        batches = [train_batch(task, rows, tokenizer, cfg, rng) for rows in micro_rows]
        step_loss = backward_micro_batches(strategy, batches)
        strategy.optimizer_step()
        _maybe_fail(fault, rank, step)
        seen += sum(len(rows) for rows in micro_rows)
        tokens += sum(int(b["attention_mask"].sum()) for b in batches)
        window_loss += step_loss
        window_n += 1
        if step % tc.log_every == 0 or step in eval_points:
            loss_sum, n_sum, seen_all, tokens_all = all_reduce(
                [window_loss, float(window_n), float(seen), float(tokens)])
            elapsed = time.perf_counter() - t_start
            metrics = {"train_loss": loss_sum / max(n_sum, 1.0), "lr": strategy.lr(),
                       "examples_per_s": seen_all / elapsed, "tokens_per_s": tokens_all / elapsed}
            window_loss, window_n = 0.0, 0
            if rank == 0:
                eta = elapsed / (step - start.step) * (tc.max_steps - step)
                print(f"[train] step {step}/{tc.max_steps} loss {metrics['train_loss']:.4f} "
                      f"{metrics['examples_per_s']:.2f} ex/s ETA {eta:.0f}s", flush=True)
                worker.log_metrics(metrics, step)
        if step in checkpoint_points:
            val = (validation_loss(strategy, valid_pass(), tokenizer, cfg, first)
                   if step in eval_points else math.nan)
            state = strategy.trainable_state_dict()  # collective under ZeRO-3
            reported = {"step": step, "val_loss": val, "train_loss": step_loss,
                        "mlflow_run_id": run_id or ""}
            if step in eval_points:
                worker.log_metrics({"val_loss": val}, step)

            def write(folder: Path, step: int = step, reported: dict = reported,
                      state: dict = state) -> None:
                facts = strategy.save(folder, rank, step)  # collective under DeepSpeed
                write_rank_state(folder, rank, {"rng": rng_state({"prompt": rng}),
                                                "stream": stream.position})
                if rank == 0:
                    write_checkpoint(folder, state, cfg, step, reported,
                                     {"world_size": worker.world_size,
                                      "restarts": start.restarts, **facts})

            report(reported, rank, write, all_ranks=True)
