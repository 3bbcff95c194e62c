"""Ray Tune sweeps at tiny size, tracked through a real MLflow server on 127.0.0.1.

(a) Optuna + ASHA, ranked on the validation exact match: interrupted (SIGUSR1, Tune's Ctrl-C)
    after the first trial, resumed with ``--resume <parent run id>``: one child run per trial,
    the finished trial not rerun; the parent/child structure, params, step metrics, statuses,
    tags and dashboard artifacts read back over HTTP; the winner registered as champion.
(b) PBT: trials train in exact-resume segments and report pointer checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ecglm.checkpoint import check_checkpoint, resolve_checkpoint
from ecglm.config import ConfigError
from ecglm.tracking import registry
from ecglm.tracking.mlflow_run import EXPERIMENT_KIND_TAG
from ecglm.tuning.sweep import (BEST_TRIAL_TAG, INTERRUPT_ENV, SWEEP_PATH_TAG, SweepInterrupted,
                                run_sweep)
from ecglm.tuning.trial import POINTER_FILE, TRIAL_ID_TAG
from tests.cluster_helpers import mlflow_server
from tests.helpers import tiny_config

pytestmark = pytest.mark.slow

PNGS = {"parallel_coordinates", "metric_vs_params", "learning_curves", "param_importance",
        "quality_vs_cost"}


def _children(client: MlflowClient, parent) -> list:
    return client.search_runs([parent.info.experiment_id],
                              f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")


@pytest.mark.timeout(900)
def test_sweep_interrupted_resumed_and_readable_in_mlflow(ray_session, tiny_root: Path,
                                                          monkeypatch) -> None:
    with mlflow_server(tiny_root / "sweep-server") as server:
        cfg = tiny_config(tiny_root, "train.max_steps=4", "train.eval_every=2",
                          f"tracking.tracking_uri={server.url}",
                          "tracking.experiment=tiny-sweeps", "tune.search=optuna",
                          "tune.num_samples=2", "tune.scheduler=asha",
                          "tune.search_space={lora.r: [2, 4], "
                          "train.lr: {loguniform: [1.0e-4, 1.0e-2]}}",
                          "tracking.register_as=tiny-sweep")
        monkeypatch.setenv(INTERRUPT_ENV, "1")
        with pytest.raises(SweepInterrupted, match=r"--resume (\w+)") as stopped:
            run_sweep(cfg)
        parent_id = stopped.value.args[0].split("--resume ")[-1].strip()
        client = MlflowClient(server.url)
        parent = client.get_run(parent_id)
        assert parent.info.status == "KILLED"
        before = {r.info.run_id: r for r in _children(client, parent)}
        finished = [r for r in before.values() if r.info.status in ("FINISHED", "KILLED")
                    and r.data.tags.get("ecglm.interrupted") != "true"]
        assert len(finished) >= 1, [(r.info.status, r.data.tags) for r in before.values()]

        monkeypatch.delenv(INTERRUPT_ENV)
        with pytest.raises(ConfigError, match=r"^tune\.search_space: differs"):
            run_sweep(tiny_config(tiny_root, f"tracking.tracking_uri={server.url}",
                                  "tracking.experiment=tiny-sweeps"), resume=parent_id)
        res = run_sweep(cfg, resume=parent_id)
        assert res.parent_run_id == parent_id and res.n_trials == 2
        assert res.metric == "val/em/overall"

        parent = client.get_run(parent_id)
        assert parent.info.status == "FINISHED"
        children = _children(client, parent)
        # one run per trial, whatever was interrupted; the finished trial was not rerun
        assert len(children) == 2, [c.data.tags.get(TRIAL_ID_TAG) for c in children]
        assert len({c.data.tags[TRIAL_ID_TAG] for c in children}) == 2
        for run in finished:
            again = client.get_run(run.info.run_id)
            assert again.info.end_time == run.info.end_time, "a finished trial was rerun"
        assert {row["mlflow_run_id"] for row in res.table} == {c.info.run_id for c in children}

        exp = client.get_experiment(parent.info.experiment_id)
        assert exp.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
        assert set(children[0].data.params) == set(children[1].data.params)  # compare view
        best = max(row[res.metric] for row in res.table)
        assert res.best_metric == pytest.approx(best)
        for row in res.table:
            child = client.get_run(row["mlflow_run_id"])
            assert child.data.params["lora.r"] == str(row["lora.r"])
            assert float(child.data.params["train.lr"]) == pytest.approx(row["train.lr"])
            history = {m.step: m.value for m in client.get_metric_history(
                child.info.run_id, res.metric)}
            assert history[row["step"]] == pytest.approx(row[res.metric])
            assert "tokens_per_s" in child.data.metrics
            # whole budget -> FINISHED; stopped at an ASHA rung -> KILLED + early_stopped
            if row["early_stopped"]:
                assert child.info.status == "KILLED"
                assert child.data.tags["ecglm.early_stopped"] == "true"
            else:
                assert child.info.status == "FINISHED" and max(history) == 4
            is_best = row["mlflow_run_id"] == res.best_mlflow_run_id
            assert (child.data.tags.get(BEST_TRIAL_TAG) == "true") == is_best
            arts = {a.path for a in client.list_artifacts(child.info.run_id)}
            assert ("model" in arts) == is_best, arts

        assert parent.data.tags["ecglm.best_run_id"] == res.best_mlflow_run_id
        assert Path(parent.data.tags[SWEEP_PATH_TAG]).is_dir()
        arts = {a.path for a in client.list_artifacts(parent_id)}
        assert {"sweep.json", "search_space.json", "best_config.yaml", "sweep_report"} <= arts
        report = {Path(a.path).name for a in client.list_artifacts(parent_id, "sweep_report")}
        assert "sweep_report.html" in report and {f"{p}.png" for p in PNGS} <= report
        local = Path(client.download_artifacts(parent_id, "sweep_report/sweep_report.html",
                                               str(tiny_root / "dl")))
        html = local.read_text()
        assert res.best_mlflow_run_id in html and "train.lr" in html
        space = json.loads(Path(client.download_artifacts(
            parent_id, "search_space.json", str(tiny_root / "dl"))).read_text())
        assert space["search"] == "optuna" and space["metric"] == "val/em/overall"
        best_cfg = Path(client.download_artifacts(parent_id, "best_config.yaml",
                                                  str(tiny_root / "dl"))).read_text()
        assert f"r: {res.best_overrides['lora.r']}" in best_cfg

        champion = registry.resolve(server.url, "models:/tiny-sweep@champion")
        assert champion.run_id == res.best_mlflow_run_id
        assert parent.data.tags["ecglm.registered_version"] == champion.version
        # what `ecglm serve --checkpoint models:/tiny-sweep@champion` loads: the winner's
        folder, run_id = resolve_checkpoint(cfg, "models:/tiny-sweep@champion")
        assert run_id == res.best_mlflow_run_id
        check_checkpoint(folder)


@pytest.mark.timeout(600)
def test_pbt_exploits_a_better_trial_and_perturbs_its_learning_rate(ray_session,
                                                                    tiny_root: Path) -> None:
    """Two trials at once (one worker each), 6 steps in segments of 2: the trial with the
    useless learning rate copies the better trial's checkpoint (an exact resume in its own
    run) and trains on with a perturbed rate."""
    cfg = tiny_config(tiny_root, "train.max_steps=6", "train.eval_every=2",
                      "train.num_workers=1", "tracking.experiment=tiny-pbt",
                      "tune.scheduler=pbt", "tune.search=random", "tune.num_samples=2",
                      "tune.max_concurrent_trials=2", "tune.metric=val_loss",
                      "tune.perturbation_interval=2", "tune.seed=3",
                      "tune.search_space={train.lr: {loguniform: [1.0e-6, 3.0e-2]}}")
    res = run_sweep(cfg)
    assert res.n_trials == 2
    client = MlflowClient(cfg.tracking.tracking_uri)
    path = Path(client.get_run(res.parent_run_id).data.tags[SWEEP_PATH_TAG])
    for row in res.table:
        assert row["step"] == 6 and row["status"] == "FINISHED", row
        history = client.get_metric_history(row["mlflow_run_id"], "val_loss")
        assert {m.step for m in history} >= {2}
    pointers = [json.loads(p.read_text()) for p in path.rglob(POINTER_FILE)]
    assert pointers and all(Path(p["checkpoint"]).is_dir() for p in pointers)
    # PBT writes pbt_policy_<target trial id>.txt for each trial that copied another
    policy = list(path.glob("pbt_policy_*.txt"))
    assert policy and (path / "pbt_global.txt").exists(), "no trial exploited the other"
    exploited = {f.stem.removeprefix("pbt_policy_") for f in policy}
    runs = {c.data.tags[TRIAL_ID_TAG]: c for c in _children(
        client, client.get_run(res.parent_run_id))}
    assert len(runs) == 2  # one run per trial, exploits included
    for trial_id in exploited:
        run = runs[trial_id]
        # it continued another trial's checkpoint in its own run, with a new peak lr
        assert int(run.data.tags["ecglm.resumed_from_step"]) in (2, 4)
        lr_changes = client.get_metric_history(run.info.run_id, "resume/lr_rescaled")
        assert any(m.value == 1.0 for m in lr_changes), lr_changes


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


def test_trial_keeps_generation_task_rows() -> None:
    """A trial that only changes LoRA/training keys reuses the sweep's shards, retrieval AND
    task rows (a report/grounding trial without them has no ``target`` column)."""
    from ecglm.config import ExperimentConfig
    from ecglm.config.loader import apply_overrides
    from ecglm.train.run import Prepared
    from ecglm.tuning.trial import _prepared

    cfg = apply_overrides(ExperimentConfig(), {"task": "report"})
    prep = Prepared(cfg, shards=object(), retrieval=object(), data=object())
    trial_cfg = apply_overrides(cfg, {"lora.r": 2})
    got = _prepared(prep, trial_cfg, ("lora.r",))
    assert got.data is prep.data and got.shards is prep.shards and got.cfg.lora.r == 2
