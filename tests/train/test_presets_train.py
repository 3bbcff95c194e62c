"""`ecglm train <preset> --tiny train.max_steps=2` end to end for the task presets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from ecglm.cli import main

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("preset,metric", [("qheart_ecgqa", "em/overall"),
                                           ("meit_reports", "model/bleu4"),
                                           ("gem_grounding", "model/grounding/n_claims"),
                                           ("classify_ptbxl", "baseline/prior/macro_auc")])
@pytest.mark.timeout(600)
def test_preset_trains_and_evaluates_tiny(ray_session, tiny_root: Path, capsys,
                                          preset: str, metric: str) -> None:
    root = tiny_root / f"preset-{preset}"
    rc = main(["train", str(REPO / "jobs" / "configs" / f"{preset}.yaml"), "--tiny",
               "train.max_steps=2", f"data.synthetic_root={tiny_root}/synthetic",
               f"data.shard_dir={tiny_root}/shards", f"llm.cache_dir={tiny_root}/models",
               f"tracking.tracking_uri=sqlite:///{root}/mlflow.db",
               f"tracking.artifact_root={root}/artifacts", f"output_dir={root}/runs",
               f"train.storage_path={root}/ray"])
    assert rc == 0
    out = capsys.readouterr().out
    start = 0 if out.startswith("{\n") else out.index("\n{\n") + 1
    result = json.loads(out[start:])
    assert metric in result["eval"]["metrics"]
    state = load_file(str(Path(result["checkpoint"]) / "trainable.safetensors"))
    assert any("lora_" in k for k in state) and state
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{root}/mlflow.db")
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["ecglm.task"]
    assert any(k.startswith("eval/") for k in run.data.metrics)
    # the training run's report carries its throughput and cost
    assert run.data.metrics["cost/worker_hours"] > 0 and run.data.metrics["tokens_per_s"] > 0
    report = Path(result["eval"]["report"]).read_text()
    assert "Throughput and cost" in report and "worker-hours" in report
