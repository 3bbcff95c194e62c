"""Ray Tune sweep: 2 trials, each a Ray Train run with its own MLflow run; the winner is
registered (``tracking.register_as``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ecglm.config import ConfigError
from ecglm.tracking import registry
from ecglm.tuning.sweep import run_sweep
from tests.helpers import tiny_config

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_sweep_two_trials(ray_session, tiny_root: Path) -> None:
    cfg = tiny_config(tiny_root, "train.max_steps=4", "train.eval_every=2",
                      "tune.search_space={lora.r: [2, 4]}", "tune.scheduler=asha",
                      "tracking.register_as=tiny-sweep")
    res = run_sweep(cfg)
    assert res.n_trials == 2
    assert sorted(row["lora.r"] for row in res.table) == [2, 4]
    metrics = [row["val_loss"] for row in res.table]
    assert res.best_metric == pytest.approx(min(metrics))

    client = MlflowClient(f"sqlite:///{tiny_root}/mlflow.db")
    parent = client.get_run(res.parent_run_id)
    assert parent.data.tags["ecglm.best_run_id"] == res.best_mlflow_run_id
    assert parent.info.status == "FINISHED"
    for row in res.table:
        child = client.get_run(row["mlflow_run_id"])
        assert child.data.tags["mlflow.parentRunId"] == res.parent_run_id
        assert child.data.params["lora.r"] == str(row["lora.r"])
        # the value Tune ranked on is the one MLflow holds for that step (a trial stopped by
        # ASHA may log one more evaluation before the stop reaches its workers)
        history = {m.step: m.value for m in client.get_metric_history(row["mlflow_run_id"],
                                                                      "val_loss")}
        assert history[row["step"]] == pytest.approx(row["val_loss"])
        if row["early_stopped"]:  # ASHA stopped it: closed as KILLED by the sweep driver
            assert child.info.status == "KILLED"
        else:
            assert child.info.status == "FINISHED", (row, child.info.status)
            assert {a.path for a in client.list_artifacts(child.info.run_id)} >= {"checkpoint"}
    assert len({row["mlflow_run_id"] for row in res.table}) == 2
    best_row = next(r for r in res.table if r["mlflow_run_id"] == res.best_mlflow_run_id)
    assert best_row["val_loss"] == pytest.approx(res.best_metric)

    # the winner (only) got a pyfunc model and is the registered champion
    for row in res.table:
        arts = {a.path for a in client.list_artifacts(row["mlflow_run_id"])}
        assert ("model" in arts) == (row["mlflow_run_id"] == res.best_mlflow_run_id), arts
    champion = registry.resolve(f"sqlite:///{tiny_root}/mlflow.db", "models:/tiny-sweep@champion")
    assert champion.run_id == res.best_mlflow_run_id
    assert res.registered is not None and res.registered.version == champion.version
    assert parent.data.tags["ecglm.registered_name"] == "tiny-sweep"
    assert parent.data.tags["ecglm.registered_version"] == champion.version


def test_search_space_keys_are_checked(tiny_root: Path) -> None:
    cfg = tiny_config(tiny_root, "tune.search_space={lora.rank: [2]}")
    with pytest.raises(ConfigError, match=r"^tune\.search_space\.lora\.rank"):
        run_sweep(cfg)
    cfg = tiny_config(tiny_root, "tune.search_space={lora.r: [0]}")
    with pytest.raises(ConfigError, match=r"^tune\.search_space\.lora\.r: value 0 \(choice\) "
                                          r"gives an invalid config: lora\.r"):
        run_sweep(cfg)
    cfg = tiny_config(tiny_root, "tune.search=random",
                      "tune.search_space={lora.r: {uniform: [2, 8]}}")  # floats for an int key
    with pytest.raises(ConfigError, match=r"^tune\.search_space\.lora\.r: value 2\.0 \(uniform\)"):
        run_sweep(cfg)


def test_trial_keeps_generation_task_rows(monkeypatch, tmp_path) -> None:
    """A trial that only changes LoRA/training keys reuses the sweep's shards, retrieval AND
    task rows (a report/grounding trial without them has no ``target`` column)."""
    from ecglm.config import ExperimentConfig
    from ecglm.config.loader import apply_overrides
    from ecglm.train.run import Prepared
    from ecglm.tuning import sweep

    seen = {}
    monkeypatch.setattr(sweep, "run_training",
                        lambda cfg, **kw: seen.update(cfg=cfg, prepared=kw["prepared"]))
    cfg = apply_overrides(ExperimentConfig(), {"task": "report"})
    prep = Prepared(cfg, shards=object(), retrieval=object(), data=object())
    sweep._trial({"lora.r": 2}, prep, ["lora.r"], "parent")
    assert seen["prepared"].data is prep.data and seen["cfg"].lora.r == 2
    assert seen["prepared"].shards is prep.shards
