"""The GPU path on one CUDA device (issue #10 part 1): a DDP run in bf16 followed by an
evaluation that generates answers, and a DeepSpeed ZeRO-3 bf16 run, both through the product
entry points (``ecglm.recipes.train.run``), on the tiny config.

A worker that left a batch on the CPU while its model sits on the GPU fails the run (device
mismatch), so a finished run with finite losses means the batches reached the device. Skipped
with a reason where CUDA is absent; ``jobs/bench/gpu.sh`` runs them (``pytest -m gpu``).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from ecglm.checkpoint import TRAINABLE_FILE, read_trainable
from tests.helpers import tiny_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,  # they start Ray
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

GPU_RUN = ("train.use_gpu=true", "train.precision=bf16", "train.num_workers=1",
           "train.cpus_per_worker=1", "train.max_steps=4", "train.eval_every=2")


def _check_trained(out: dict, cfg_steps: int = 4) -> None:
    """Finished MLflow run, finite validation loss, a checkpoint whose LoRA ``B`` matrices
    (zero at initialisation) moved: the optimizer stepped in bf16."""
    assert out["val_loss"] is not None and math.isfinite(out["val_loss"])
    ckpt = Path(out["checkpoint"])
    assert (ckpt / TRAINABLE_FILE).is_file()
    state = read_trainable(ckpt)
    lora_b = [t for k, t in state.items() if "lora_B" in k]
    assert lora_b and all(torch.isfinite(t).all() for t in state.values())
    assert any(float(t.abs().max()) > 0 for t in lora_b)
    client = MlflowClient(out["tracking_uri"])
    run = client.get_run(out["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    losses = [m.value for m in client.get_metric_history(out["mlflow_run_id"], "train_loss")]
    assert len(losses) == cfg_steps and all(math.isfinite(v) for v in losses)


def test_ddp_bf16_train_then_generate_on_gpu(ray_session, tmp_path: Path) -> None:
    """DDP, bf16 autocast, one GPU worker; then the evaluation generates on the GPU."""
    from ecglm.recipes import train

    cfg = tiny_config(tmp_path, "train.strategy=ddp", *GPU_RUN)
    out = train.run(cfg, evaluate=True)
    _check_trained(out)
    metrics = out["eval"]["metrics"]
    assert 0.0 <= metrics["em/overall"] <= 1.0 and metrics["n/overall"] > 0


def test_deepspeed_zero3_bf16_on_gpu(ray_session, tmp_path: Path) -> None:
    """DeepSpeed ZeRO-3 with its bf16 section, one GPU worker (nccl)."""
    from ecglm.recipes import train

    cfg = tiny_config(tmp_path, "train.strategy=deepspeed", "train.zero_stage=3", *GPU_RUN)
    out = train.run(cfg, evaluate=False)
    _check_trained(out)
