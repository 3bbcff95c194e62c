"""Worker side of the Ray Train runner, shared by training and pretraining.

Every Ray Train worker of :func:`ecglm.train.runner.fit_workers` starts with
:func:`start_worker` and uses the same pieces: endless seeded batches of its dataset shard,
AdamW with linear warmup then cosine/linear decay, gradient clipping, all-reduce of Python
floats, and :func:`report` (every rank reports the same number of times; rank 0 attaches the
checkpoint it wrote; a barrier keeps ranks in step). The loops keep their own model and loss.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Optional, Sequence

import ray.train
import torch
import torch.distributed as dist
from torch import nn
from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

from ecglm.config import ExperimentConfig, from_dict
from ecglm.tracking.mlflow_run import log_metrics
from ecglm.utils.ray_env import set_process_env

ScheduleKind = Literal["cosine", "linear"]


@dataclass(frozen=True)
class WorkerContext:
    """What every worker knows about its run."""

    cfg: ExperimentConfig
    run_id: Optional[str]
    """The MLflow run the driver opened (None: no tracking)."""
    rank: int
    world_size: int

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log ``metrics`` at ``step`` to the MLflow run, from rank 0 only."""
        if self.rank == 0 and self.run_id:
            log_metrics(self.cfg.tracking.tracking_uri, self.run_id, metrics, step)


def start_worker(loop_config: Mapping[str, Any]) -> WorkerContext:
    """Process environment, config, rank; ``train.cpus_per_worker`` torch threads; the torch
    seed set to ``cfg.seed`` (identical initialisation on every rank).

    ``loop_config`` must hold ``config`` (nested ExperimentConfig dict) and may hold
    ``mlflow_run_id``.
    """
    set_process_env()
    cfg: ExperimentConfig = from_dict(loop_config["config"])
    ctx = ray.train.get_context()
    torch.set_num_threads(max(1, int(cfg.train.cpus_per_worker)))
    torch.manual_seed(cfg.seed)
    return WorkerContext(cfg, loop_config.get("mlflow_run_id"), ctx.get_world_rank(),
                         ctx.get_world_size())


def is_distributed() -> bool:
    """True inside an initialised torch.distributed process group."""
    return dist.is_available() and dist.is_initialized()


def all_reduce(values: Sequence[float], op: Literal["sum", "max"] = "sum") -> list[float]:
    """Element-wise sum (or max) of ``values`` over all ranks, in float64 (no-op alone)."""
    t = torch.tensor(list(values), dtype=torch.float64)
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t.tolist()


def barrier() -> None:
    """Wait for every rank (no-op outside a process group)."""
    if is_distributed():
        dist.barrier()


def endless_batches(shard: Any, batch_size: int, seed: int, batch_format: str,
                    setting: str) -> Iterator[Any]:
    """Endless full batches of a Ray Data shard; a new seeded local shuffle every pass.

    The last partial batch of a pass is dropped (every step sees ``batch_size`` rows; a new
    shuffle puts those rows in the next pass's batches).

    Args:
        seed: the shuffle seed of pass ``k`` is ``seed + k``.
        batch_format: ``"pandas"`` or ``"pyarrow"``.
        setting: the dotted config key of ``batch_size``, for the error message.

    Raises:
        RuntimeError: the shard holds fewer rows than one batch.
    """
    n_pass = 0
    while True:
        n = 0
        for batch in shard.iter_batches(batch_size=batch_size, batch_format=batch_format,
                                        local_shuffle_buffer_size=256,
                                        local_shuffle_seed=seed + n_pass, drop_last=True):
            n += 1
            yield batch
        if n == 0:
            raise RuntimeError(f"{setting}={batch_size}: this worker's train shard holds fewer "
                               "rows than one batch (no full batch reached it)")
        n_pass += 1


def make_adamw(params: Iterable[Any], lr: float, betas: Sequence[float] = (0.9, 0.999),
               eps: float = 1e-8, weight_decay: float = 0.01) -> torch.optim.Optimizer:
    """AdamW over ``params`` (tensors or param-group dicts, whose own ``weight_decay`` wins)."""
    b1, b2 = betas
    return torch.optim.AdamW(params, lr=lr, betas=(b1, b2), eps=eps, weight_decay=weight_decay)


def warmup_schedule(opt: torch.optim.Optimizer, kind: ScheduleKind, warmup_steps: int,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``warmup_steps`` optimizer steps, then cosine or linear decay to 0
    at ``total_steps``."""
    make = get_linear_schedule_with_warmup if kind == "linear" else get_cosine_schedule_with_warmup
    return make(opt, warmup_steps, total_steps)


def clip_and_step(optimizer: torch.optim.Optimizer, scheduler: Any,
                  params: Sequence[nn.Parameter], grad_clip: float) -> None:
    """After ``loss.backward()``: clip the gradient norm of ``params`` to ``grad_clip`` (when
    > 0), step the optimizer and the schedule, clear the gradients."""
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def report(metrics: Mapping[str, Any], rank: int,
           write: Optional[Callable[[Path], None]] = None) -> None:
    """``ray.train.report`` on every rank; rank 0 first calls ``write(folder)`` to fill a fresh
    folder and attaches it as the checkpoint. Call it on every rank the same number of times."""
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0 and write is not None:
            write(Path(tmp))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        barrier()
        ray.train.report(dict(metrics), checkpoint=checkpoint)
