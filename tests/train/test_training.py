"""Ray Train end to end on the tiny config: DDP and DeepSpeed ZeRO-2/3 on CPU (gloo)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from ecglm.checkpoint import STATE_FILE, TRAINABLE_FILE, read_state
from ecglm.config import flatten
from ecglm.models.ecg_lm import build_ecg_lm
from ecglm.models.from_checkpoint import load_model
from ecglm.train.run import TrainResult
from tests.helpers import tiny_config
from tests.train.conftest import STRATEGIES, straight_run

pytestmark = pytest.mark.slow


def _initial_trainable(cfg) -> dict[str, torch.Tensor]:
    torch.manual_seed(cfg.seed)
    return build_ecg_lm(cfg).trainable_state_dict()


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.timeout(600)
def test_training_run(straight_runs: dict[str, TrainResult], tiny_root: Path,
                      strategy: str) -> None:
    """DDP / ZeRO-2 / ZeRO-3: the shared uninterrupted 4-step run (the resume tests compare
    against the same run)."""
    res = straight_run(straight_runs, tiny_root, strategy)
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
    val_hist = {m.step: m.value for m in client.get_metric_history(res.run_id, "val_loss")}
    assert sorted(val_hist) == [2, 4]
    # the kept checkpoint is the one with the lowest val_loss (the later one on a tie)
    assert read_state(res.checkpoint_dir).step == min(val_hist, key=lambda s: (val_hist[s], -s))
    arts = {a.path for a in client.list_artifacts(res.run_id)}
    assert {"config.yaml", "checkpoint", "retrieval", "data"} <= arts
    ck = {a.path for a in client.list_artifacts(res.run_id, "checkpoint")}
    assert f"checkpoint/{TRAINABLE_FILE}" in ck
    assert res.metrics["val_loss"] == pytest.approx(run.data.metrics["val_loss"])


def test_train_then_evaluate_logs_exact_match(ray_session, tiny_root: Path) -> None:
    """`ecglm train` path: train, then exact match per type on held-out patients, in MLflow."""
    import json

    from ecglm.recipes import train
    from ecglm.train.run import split_rows

    cfg = tiny_config(tiny_root, "train.max_steps=2", "train.eval_every=0")
    out = train.run(cfg)
    metrics = out["eval"]["metrics"]
    assert 0.0 <= metrics["em/overall"] <= 1.0
    summary = json.loads(Path(out["eval"]["summary"]).read_text())
    assert summary["split"] == "test" and summary["metrics"] == metrics
    preds = json.loads((Path(out["eval"]["summary"]).parent / "predictions.json").read_text())
    # evaluated items are exactly the test split, whose patients never occur in training
    from ecglm.train.run import prepare

    prep = prepare(cfg)  # same config: reuses the shards and retrieval folder
    test_rows, train_rows = split_rows(prep, "test"), split_rows(prep, "train")
    assert sorted(p["sample_id"] for p in preds) == sorted(r.sample_id for r in test_rows)
    train_patients = {p for r in train_rows for p in r.patient_ids}
    assert not train_patients & {p for r in test_rows for p in r.patient_ids}
    assert metrics["n/overall"] == len(test_rows)
    for p in preds:
        assert set(p["parsed"]) <= set(next(r for r in test_rows
                                            if r.sample_id == p["sample_id"]).options)
    client = MlflowClient(out["tracking_uri"])
    run = client.get_run(out["mlflow_run_id"])
    assert run.data.metrics["eval/em/overall"] == pytest.approx(metrics["em/overall"])
    assert run.data.tags["ecglm.stage"] == "evaluated"
    eval_files = {a.path for a in client.list_artifacts(out["mlflow_run_id"], "eval")}
    assert {"eval/eval_summary.json", "eval/predictions.json", "eval/em_per_type.png"} <= eval_files


def test_retrieval_never_returns_own_record_or_patient(ray_session, tiny_root: Path) -> None:
    """The precomputed neighbours used in prompts come from other patients' training records."""
    import pyarrow.parquet as pq

    from ecglm.train.run import prepare

    prep = prepare(tiny_config(tiny_root))
    records = pq.read_table(prep.shards.records, columns=["ecg_id", "patient_id", "split",
                                                          "report"]).to_pylist()
    patient = {r["ecg_id"]: r["patient_id"] for r in records}
    split = {r["ecg_id"]: r["split"] for r in records}
    report = {r["ecg_id"]: r["report"] for r in records}
    assert set(prep.retrieval.neighbour_ids) == set(patient)
    for ecg_id, ids in prep.retrieval.neighbour_ids.items():
        assert len(ids) == prep.cfg.retrieval.top_k
        assert ecg_id not in ids
        assert all(patient[i] != patient[ecg_id] for i in ids)
        assert all(split[i] == "train" for i in ids)  # only training reports are indexed
        assert prep.retrieval.neighbours[ecg_id] == [report[i] for i in ids]
