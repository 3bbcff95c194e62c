"""Ray Train end to end on the tiny config: DDP and DeepSpeed ZeRO-2/3 on CPU (gloo)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from ecglm.config import flatten
from ecglm.evaluation.run import load_model
from ecglm.models.ecg_lm import build_ecg_lm
from ecglm.train.loop import STATE_FILE, TRAINABLE_FILE
from ecglm.train.run import run_training
from tests.train.conftest import tiny_config

pytestmark = pytest.mark.slow


def _initial_trainable(cfg) -> dict[str, torch.Tensor]:
    torch.manual_seed(cfg.seed)
    return build_ecg_lm(cfg).trainable_state_dict()


@pytest.mark.parametrize(
    "strategy, overrides",
    [("ddp", []), ("zero2", ["train.strategy=deepspeed", "train.zero_stage=2"]),
     ("zero3", ["train.strategy=deepspeed", "train.zero_stage=3"])],
)
def test_training_run(ray_session, tiny_root: Path, strategy: str, overrides: list[str]) -> None:
    cfg = tiny_config(tiny_root, "train.max_steps=4", "train.eval_every=2", *overrides)
    res = run_training(cfg, run_name=f"test-{strategy}")
    cfg = res.prepared.cfg

    # checkpoint: full (unpartitioned) trainable tensors, changed by training, loadable
    state = load_file(str(res.checkpoint_dir / TRAINABLE_FILE))
    init = _initial_trainable(cfg)
    assert set(state) == set(init)
    for k, v in init.items():
        assert state[k].shape == v.shape, k
    changed = [k for k in init if not torch.equal(state[k], init[k])]
    assert len(changed) > len(init) // 2, "training did not update the trainable parts"
    assert all(torch.isfinite(v).all() for v in state.values())
    assert (res.checkpoint_dir / STATE_FILE).exists()
    model = load_model(cfg, res.checkpoint_dir)
    got = model.trainable_state_dict()
    assert all(torch.equal(got[k], state[k]) for k in state)

    # MLflow run read back through the client
    client = MlflowClient(cfg.tracking.tracking_uri)
    run = client.get_run(res.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.strategy"] == cfg.train.strategy
    assert set(flatten(cfg)) <= set(run.data.params)
    steps = [m.step for m in client.get_metric_history(res.run_id, "train_loss")]
    assert steps == [1, 2, 3, 4]
    assert [m.step for m in client.get_metric_history(res.run_id, "val_loss")] == [2, 4]
    arts = {a.path for a in client.list_artifacts(res.run_id)}
    assert {"config.yaml", "checkpoint", "retrieval", "data"} <= arts
    ck = {a.path for a in client.list_artifacts(res.run_id, "checkpoint")}
    assert f"checkpoint/{TRAINABLE_FILE}" in ck
    assert res.metrics["val_loss"] == pytest.approx(run.data.metrics["val_loss"])
