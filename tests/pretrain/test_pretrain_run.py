"""End to end: ``ecglm pretrain`` on the tiny synthetic config through Ray Train (2 workers)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from ecglm.checkpoint import PRETRAIN_MODEL_FILE as MODEL_FILE
from ecglm.models.encoders import build_encoder
from ecglm.pretrain.model import SigLIPModel
from tests.helpers import tiny_config


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tiny_pretraining_end_to_end(ray_session, tmp_path_factory: pytest.TempPathFactory
                                     ) -> None:
    from mlflow.tracking import MlflowClient

    from ecglm.pretrain.run import run_pretraining

    root = tmp_path_factory.mktemp("pretrain")
    cfg = tiny_config(root, "data.synthetic_records=60", "pretrain.epochs=2",
                      "pretrain.batch_size=4", "pretrain.embed_dim=16",
                      "pretrain.lr=1.0e-3", "tracking.experiment=ecglm-pretrain-test")
    res = run_pretraining(cfg)

    # metrics in the result and in the MLflow run (per step, per epoch, at the end)
    assert 0.0 <= res.metrics["zeroshot/test/macro_auc"] <= 1.0
    run = MlflowClient(cfg.tracking.tracking_uri).get_run(res.run_id)
    logged = run.data.metrics
    for key in ("train_loss", "logit_scale", "logit_bias", "valid_loss",
                "zeroshot/test/macro_auc", "zeroshot/valid/n_records", "data/missing_text/train"):
        assert key in logged, key
    assert run.info.status == "FINISHED"
    client = MlflowClient(cfg.tracking.tracking_uri)
    artifacts = {a.path for folder in ("encoder", "pretrain")
                 for a in client.list_artifacts(res.run_id, folder)}
    assert {"encoder/pretrained_encoder.safetensors", "pretrain/summary.json",
            "pretrain/pretrain.png"} <= artifacts
    summary = res.summary
    assert summary["counts"]["train"]["with_text"] > 0
    assert len(summary["history"]["steps"]) == summary["steps"] > 0

    # the saved encoder loads strictly through build_encoder and equals the trained tower's
    assert res.encoder_path == res.output_dir / "pretrained_encoder.safetensors"
    enc_cfg = dataclasses.replace(cfg.encoder, checkpoint=str(res.encoder_path))
    loaded = build_encoder(enc_cfg, fs=float(cfg.data.fs)).eval()
    model = SigLIPModel(cfg, text_dim=384)
    model.load_state_dict(load_file(str(res.output_dir / "checkpoint" / MODEL_FILE)))
    model.eval()
    x = torch.randn(3, 12, int(cfg.data.fs * cfg.data.seconds))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).pooled, model.ecg.encoder(x).pooled)
        fresh = build_encoder(cfg.encoder, fs=float(cfg.data.fs)).eval()
        assert not torch.allclose(fresh(x).pooled, loaded(x).pooled)
