"""Worker side of the Ray Train runner, shared by training and pretraining.

Every Ray Train worker of :func:`ecglm.train.runner.fit_workers` starts with
:func:`start_worker` and uses the same pieces: endless seeded batches of its dataset shard,
AdamW with linear warmup then cosine/linear decay, gradient clipping, all-reduce of Python
floats, and :func:`report` (every rank reports the same number of times; rank 0 attaches the
checkpoint it wrote; a barrier keeps ranks in step). The loops keep their own model and loss.
"""

from __future__ import annotations

import math

import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Optional, Sequence

import numpy as np
import ray.train
import torch
import torch.distributed as dist
from torch import nn
from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

from ecglm.config import ExperimentConfig, from_dict
from ecglm.tracking.mlflow_run import log_metrics, set_tags
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

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set ``tags`` on the MLflow run, from rank 0 only."""
        if self.rank == 0 and self.run_id:
            set_tags(self.cfg.tracking.tracking_uri, self.run_id, tags)


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


class BatchStream:
    """Endless full batches of a Ray Data shard; a new seeded local shuffle every pass, with a
    position that can be saved and resumed.

    Pass ``k`` iterates the shard with ``local_shuffle_seed = seed + k`` (deterministic for a
    given shard), so a stream resumed at ``(pass_index, consumed)`` re-iterates that pass and
    skips its first ``consumed`` batches: it yields exactly what the original stream would have
    yielded next. The last partial batch of a pass is dropped (every step sees ``batch_size``
    rows; a new shuffle puts those rows in the next pass's batches).

    Args:
        seed: the shuffle seed of pass ``k`` is ``seed + k``.
        batch_format: ``"pandas"`` or ``"pyarrow"``.
        setting: the dotted config key of ``batch_size``, for the error message.
        pass_index, consumed: where to start (a saved :attr:`position`).

    Raises (on iteration):
        RuntimeError: the shard holds fewer rows than one batch.
    """

    def __init__(self, shard: Any, batch_size: int, seed: int, batch_format: str, setting: str,
                 pass_index: int = 0, consumed: int = 0) -> None:
        self.shard, self.batch_size, self.seed = shard, batch_size, seed
        self.batch_format, self.setting = batch_format, setting
        self.pass_index, self.consumed = int(pass_index), int(consumed)
        self._it = self._generate()

    @property
    def position(self) -> dict[str, int]:
        """``{"pass": k, "consumed": batches of pass k already yielded}``."""
        return {"pass": self.pass_index, "consumed": self.consumed}

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> Any:
        return next(self._it)

    def _generate(self) -> Iterator[Any]:
        skip = self.consumed
        while True:
            n = 0
            for batch in self.shard.iter_batches(
                    batch_size=self.batch_size, batch_format=self.batch_format,
                    local_shuffle_buffer_size=256,
                    local_shuffle_seed=self.seed + self.pass_index, drop_last=True):
                n += 1
                if n <= skip:
                    continue
                self.consumed = n
                yield batch
            if n == 0:
                raise RuntimeError(f"{self.setting}={self.batch_size}: this worker's train shard "
                                   "holds fewer rows than one batch (no full batch reached it)")
            skip = 0
            self.pass_index += 1
            self.consumed = 0


def endless_batches(shard: Any, batch_size: int, seed: int, batch_format: str,
                    setting: str) -> Iterator[Any]:
    """Endless full batches of a Ray Data shard from its start (:class:`BatchStream`)."""
    return BatchStream(shard, batch_size, seed, batch_format, setting)


def rng_state(extra: Optional[Mapping[str, random.Random]] = None) -> dict[str, Any]:
    """This process's RNG states: python ``random``, numpy's global generator, torch CPU and
    (when present) every CUDA device, plus the states of the named ``extra`` generators.
    Plain values and tensors only (saved with ``torch.save``, read with ``weights_only``)."""
    py = random.getstate()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    out: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "extra": {},
    }
    for name, gen in (extra or {}).items():
        st = gen.getstate()
        out["extra"][name] = [st[0], list(st[1]), st[2]]
    return out


def set_rng_state(state: Mapping[str, Any],
                  extra: Optional[Mapping[str, random.Random]] = None) -> None:
    """Restore the states captured by :func:`rng_state` (CUDA only when both sides have it)."""
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["gauss"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
    for name, gen in (extra or {}).items():
        if name in state.get("extra", {}):
            v, internal, gauss = state["extra"][name]
            gen.setstate((v, tuple(internal), gauss))


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


def set_base_lr(scheduler: Any, optimizer: Any, lr: float) -> bool:
    """Make ``lr`` the peak learning rate of a restored schedule (PBT's perturbation, or a
    resume with another ``train.lr``): the schedule's base rates and every parameter group's
    current rate are scaled by ``lr / base``, so the warmup/decay position is kept. Returns
    False when the base rate already is ``lr`` (nothing changed)."""
    base = float(scheduler.base_lrs[0])
    if base <= 0 or math.isclose(base, lr, rel_tol=1e-9):
        return False
    factor = lr / base
    scheduler.base_lrs = [b * factor for b in scheduler.base_lrs]
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * factor
        if "initial_lr" in group:
            group["initial_lr"] = group["initial_lr"] * factor
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    return True


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
           write: Optional[Callable[[Path], None]] = None, all_ranks: bool = False) -> None:
    """``ray.train.report`` on every rank; rank 0 (every rank with ``all_ranks``) first calls
    ``write(folder)`` to fill a fresh folder and attaches it as the checkpoint (Ray Train merges
    the folders of all ranks into one checkpoint directory: file names must differ per rank).
    Call it on every rank the same number of times."""
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if (rank == 0 or all_ranks) and write is not None:
            write(Path(tmp))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        barrier()
        ray.train.report(dict(metrics), checkpoint=checkpoint)
