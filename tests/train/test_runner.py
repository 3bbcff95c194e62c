"""The Ray Train runner's pure parts: checkpoint choice, scaling from the config, and the
worker helpers shared by training and pretraining (no Ray cluster needed)."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from ecglm.config import ExperimentConfig
from ecglm.train import worker
from ecglm.train.runner import CheckpointScore, RunnerSpec, kept_checkpoint, pick_best


def test_pick_best_min_max_ties_and_nan() -> None:
    cands = [("a", {"val_loss": 2.0}), ("b", {"val_loss": float("nan")}),
             ("c", {"val_loss": 1.0}), ("d", {"val_loss": 1.0}), ("e", {"other": 0.0})]
    assert pick_best(cands, CheckpointScore("val_loss", "min")) == "d"  # later on a tie
    assert pick_best(cands, CheckpointScore("val_loss", "max")) == "a"
    assert pick_best(cands[1:2], CheckpointScore("val_loss")) is None
    assert pick_best(cands, CheckpointScore(None)) is None


def test_kept_checkpoint_prefers_best_then_latest() -> None:
    # Ray lists kept checkpoints worst first: index 0 is NOT the best
    result = SimpleNamespace(best_checkpoints=[("worse", {"val_loss": 3.0}),
                                              ("best", {"val_loss": 1.0})], checkpoint="latest")
    assert kept_checkpoint(result, CheckpointScore("val_loss", "min", 2), "r") == "best"
    assert kept_checkpoint(result, CheckpointScore(), "r") == "latest"
    none = SimpleNamespace(best_checkpoints=[], checkpoint=None)
    with pytest.raises(RuntimeError, match="run r-1: the workers reported no checkpoint"):
        kept_checkpoint(none, CheckpointScore("val_loss"), "r-1")


def test_spec_from_train_section() -> None:
    train = ExperimentConfig().train
    spec = RunnerSpec.from_train(train, "x-1234", CheckpointScore("val_loss", num_to_keep=2),
                                 tune_report=True, datasets_to_split=["train"])
    assert (spec.num_workers, spec.use_gpu, spec.cpus_per_worker, spec.storage_path) == (
        train.num_workers, train.use_gpu, train.cpus_per_worker, train.storage_path)
    assert spec.tune_report and list(spec.datasets_to_split) == ["train"]


class _Shard:
    """Ray Data shard stand-in: ``iter_batches`` over ``n`` rows, seeded shuffle."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seeds: list[int] = []

    def iter_batches(self, batch_size: int, batch_format: str, local_shuffle_buffer_size: int,
                     local_shuffle_seed: int, drop_last: bool) -> Any:
        assert drop_last and batch_format == "pyarrow"
        self.seeds.append(local_shuffle_seed)
        g = torch.Generator().manual_seed(local_shuffle_seed)
        rows = torch.randperm(self.n, generator=g).tolist()
        for i in range(0, self.n - batch_size + 1, batch_size):
            yield rows[i : i + batch_size]


def test_endless_batches_reshuffles_each_pass_and_drops_partial() -> None:
    shard = _Shard(5)
    it = worker.endless_batches(shard, 2, seed=10, batch_format="pyarrow", setting="x.bs")
    got = [next(it) for _ in range(6)]  # 2 full batches per pass, 3 passes
    assert all(len(b) == 2 for b in got) and shard.seeds == [10, 11, 12]
    assert got[:2] != got[2:4]
    with pytest.raises(RuntimeError, match=r"x\.bs=8: this worker's train shard holds fewer"):
        next(worker.endless_batches(_Shard(5), 8, 0, "pyarrow", "x.bs"))


def test_all_reduce_without_process_group_is_identity() -> None:
    assert not worker.is_distributed()
    assert worker.all_reduce([1.5, 2.0]) == [1.5, 2.0]
    assert worker.all_reduce([3.0], "max") == [3.0]
    worker.barrier()  # no-op


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_schedule_warmup_then_decay_to_zero(kind: str) -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    opt = worker.make_adamw([p], lr=1.0)
    sched = worker.warmup_schedule(opt, kind, warmup_steps=2, total_steps=6)
    lrs = []
    for _ in range(6):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:3] == [0.0, 0.5, 1.0]
    mid = 0.5 * (1 + math.cos(math.pi * 0.5)) if kind == "cosine" else 0.5
    assert lrs[4] == pytest.approx(mid)
    assert sched.get_last_lr()[0] == pytest.approx(0.0)


def test_clip_and_step_clips_steps_and_clears() -> None:
    p = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    (p * torch.tensor([30.0, 40.0, 0.0, 0.0])).sum().backward()  # grad norm 50
    worker.clip_and_step(opt, sched, [p], grad_clip=5.0)
    torch.testing.assert_close(p.detach(), torch.tensor([-3.0, -4.0, 0.0, 0.0]))
    assert p.grad is None and sched.last_epoch == 1


def test_adamw_defaults_and_param_groups() -> None:
    a, b = torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(2))
    opt = worker.make_adamw([{"params": [a], "weight_decay": 0.1},
                             {"params": [b], "weight_decay": 0.0}], lr=1e-3)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert opt.param_groups[0]["betas"] == (0.9, 0.999) and opt.param_groups[0]["eps"] == 1e-8
