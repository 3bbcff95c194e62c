"""Resume building blocks without Ray: the data stream's saved position, RNG states through
the checkpoint files (``weights_only`` loads), resumable-checkpoint lookup."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from ecglm import checkpoint
from ecglm.checkpoint import (CheckpointFileError, latest_resumable, read_rank_state,
                              read_trainer_state, resolve_resume, write_rank_state,
                              write_trainer_state)
from ecglm.train.worker import BatchStream, rng_state, set_rng_state
from tests.helpers import tiny_config
from tests.train.test_runner import _Shard


def test_stream_resumed_at_its_position_continues_exactly() -> None:
    straight = BatchStream(_Shard(7), 2, seed=3, batch_format="pyarrow", setting="x")
    expected = [next(straight) for _ in range(8)]  # 3 full batches per pass
    for n in range(8):
        first = BatchStream(_Shard(7), 2, seed=3, batch_format="pyarrow", setting="x")
        head = [next(first) for _ in range(n)]
        pos = first.position
        resumed = BatchStream(_Shard(7), 2, 3, "pyarrow", "x", pos["pass"], pos["consumed"])
        assert head + [next(resumed) for _ in range(8 - n)] == expected, n
    assert straight.position == {"pass": 2, "consumed": 2}


def test_rng_states_round_trip_through_rank_file(tmp_path: Path) -> None:
    prompt = random.Random(5)
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    prompt.random()
    write_rank_state(tmp_path, 1, {"rng": rng_state({"prompt": prompt}),
                                   "stream": {"pass": 4, "consumed": 2}})
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)), prompt.random())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    prompt.seed(9)
    state = read_rank_state(tmp_path, 1)  # torch.load(weights_only=True)
    assert state is not None and read_rank_state(tmp_path, 0) is None
    set_rng_state(state["rng"], {"prompt": prompt})
    assert (random.random(), float(np.random.rand()), float(torch.rand(1)),
            prompt.random()) == expected
    assert state["stream"] == {"pass": 4, "consumed": 2}


def test_trainer_state_round_trip(tmp_path: Path) -> None:
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    p.grad = torch.ones(3)
    opt.step()
    sched.step()
    write_trainer_state(tmp_path, {"optimizer": opt.state_dict(),
                                   "scheduler": sched.state_dict(), "scaler": {}})
    got = read_trainer_state(tmp_path)
    opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    opt2.load_state_dict(got["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert got["scheduler"]["last_epoch"] == 1


def _ckpt(folder: Path, cfg, step: int, resumable: bool) -> Path:
    checkpoint.write_checkpoint(folder, {"w": torch.zeros(2)}, cfg, step,
                                {"mlflow_run_id": "abc", "val_loss": 1.0},
                                {"world_size": 2, "strategy": "ddp"} if resumable else None)
    return folder


def test_latest_resumable_and_folder_resolution(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    run_dir = tmp_path / "ray" / "run"
    _ckpt(run_dir / "checkpoint_a", cfg, 2, True)
    _ckpt(run_dir / "checkpoint_b", cfg, 6, True)
    _ckpt(run_dir / "checkpoint_c", cfg, 8, False)  # not resumable: ignored
    (run_dir / "other").mkdir()
    folder, state = latest_resumable(str(run_dir))
    assert Path(folder).name == "checkpoint_b" and state.step == 6
    assert latest_resumable(str(tmp_path / "missing")) is None
    point = resolve_resume(cfg, str(run_dir / "checkpoint_a"))
    assert (point.step, point.run_id) == (2, "abc")
    with pytest.raises(CheckpointFileError, match="holds no resume state"):
        resolve_resume(cfg, str(run_dir / "checkpoint_c"))
    with pytest.raises(CheckpointFileError, match="not found"):
        resolve_resume(cfg, str(tmp_path / "nope" / "x"))


def test_cli_resume_sets_train_resume_from(tmp_path: Path) -> None:
    from ecglm.cli import _train_config, build_parser
    from tests.helpers import REPO

    args = build_parser().parse_args(["train", str(REPO / "jobs/configs/tiny.yaml"),
                                      "--resume", "0123abcd", "--no-eval"])
    assert _train_config(args).train.resume_from == "0123abcd"
    plain = build_parser().parse_args(["train", str(REPO / "jobs/configs/tiny.yaml")])
    assert _train_config(plain).train.resume_from is None
