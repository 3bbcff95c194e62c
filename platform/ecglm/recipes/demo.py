"""``ecglm demo CONFIG``: shards -> train -> evaluate -> sweep -> register the winner (MLflow
Model Registry, alias ``champion``) -> serve it by ``models:/NAME@champion`` and send one real
request -> shut down, with one banner per stage and a summary at the end."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import requests

from ecglm.config import ExperimentConfig
from ecglm.evaluation.learning import learning_lines
from ecglm.recipes.common import evaluate_prepared, ray_lifecycle
from ecglm.recipes.eval_worker import eval_resources
from ecglm.recipes.serve import start_prepared
from ecglm.serving.launch import stop
from ecglm.serving.pyfunc import register_run
from ecglm.train.resources import check_resources
from ecglm.train.run import prepare, run_training, split_rows
from ecglm.tuning.sweep import run_sweep


def _banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)), flush=True)


def run(cfg: ExperimentConfig) -> dict[str, Any]:
    """Run every stage once on ``cfg`` and print the summary."""
    with ray_lifecycle(cfg):
        return _run(cfg)


def _run(cfg: ExperimentConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    # train.resource_check: the training (+ evaluation task) and the sweep must be placeable
    check_resources(cfg, eval_task=eval_resources(cfg))
    check_resources(cfg, sweep=True)
    _banner("1/5 data: shards + retrieval index")
    prep = prepare(cfg)
    cfg, task = prep.cfg, prep.task
    man = prep.shards.manifest
    kind = man.get("kind")
    print(f"[demo] data source: {kind} ({man.get('source')})")
    print(f"[demo] counts: {json.dumps(man.get('counts'))}")

    _banner("2/5 train (Ray Train, " + cfg.train.strategy + ") + evaluate")
    res = run_training(cfg, prepared=prep, run_name=f"{cfg.name}-demo")
    ev = evaluate_prepared(prep, res.checkpoint_dir, res.run_id,
                           extra_sections=[res.cost.section()] if res.cost else [])

    _banner("3/5 sweep (Ray Tune + ASHA, one MLflow run per trial)")
    sweep = run_sweep(cfg)
    for row in sweep.table:
        print(f"[demo] trial {row}")
    print(f"[demo] best trial {sweep.best_overrides}: {sweep.metric}={sweep.best_metric:.4f} "
          f"(MLflow run {sweep.best_mlflow_run_id}); report: {sweep.report}")

    _banner("4/5 register the winner + serve it (Model Registry -> Ray Serve graph)")
    # the main run and the sweep's winner are compared on what both measured: val_loss
    winner = res.run_id
    best_row = next((r for r in sweep.table if r["mlflow_run_id"] == sweep.best_mlflow_run_id),
                    {})
    if (best_row.get("val_loss") is not None and res.metrics.get("val_loss") is not None
            and float(best_row["val_loss"]) < float(res.metrics["val_loss"])):
        winner = sweep.best_mlflow_run_id
    name = cfg.tracking.register_as or cfg.name
    alias = cfg.tracking.register_alias or "champion"
    if sweep.registered is not None and winner == sweep.best_mlflow_run_id:
        version = sweep.registered  # the sweep registered it already (tracking.register_as)
        name = version.name
        ref = (f"models:/{name}@{cfg.tracking.register_alias}" if cfg.tracking.register_alias
               else f"models:/{name}/{version.version}")
    else:
        version = register_run(cfg.tracking.tracking_uri, winner, name, alias,
                               Path(cfg.output_dir) / "downloads")
        ref = f"models:/{name}@{alias}"
    which = "the sweep winner" if winner != res.run_id else "the main run"
    print(f"[demo] registered {which} {winner} as {name} version {version.version}; "
          f"serving {ref}")
    rows = split_rows(prep, cfg.evaluation.split) or split_rows(prep, "valid")
    row = next((r for r in rows if r.n_ecg == 1), rows[0])
    url, _ = start_prepared(prep, ref)
    try:
        body = {"ecg": row.ecgs()[0].round(4).tolist(), "fs": cfg.data.fs,
                **task.request_fields_of(row)}
        t_req = time.perf_counter()
        resp = requests.post(url, json=body, timeout=120)
        latency = time.perf_counter() - t_req
        served = resp.json()
    finally:
        _banner("5/5 shut down")
        stop()

    _banner("summary")
    head = task.headline(ev["metrics"])
    print(f"data source           : {kind}")
    print(f"{task.name} metrics ({cfg.evaluation.split:5s}): {json.dumps(head.pop('model', {}))}")
    for name, base in head.items():
        print(f"  {name + ' baseline':20s}: {json.dumps(base)}")
    if ev.get("report"):
        print(f"evaluation report     : {ev['report']}")
    for line in learning_lines(cfg.output_dir):
        print(line)
    print(f"MLflow training run   : {res.run_id}")
    print(f"MLflow sweep run      : {sweep.parent_run_id} (best trial {sweep.best_mlflow_run_id})")
    print(f"registered model      : {ref} = version {version.version} (run {winner}); "
          f"ecglm serve CONFIG --checkpoint {ref}")
    print(f"MLflow UI             : bash mlflow/start_server.sh  "
          f"(store {cfg.tracking.tracking_uri}) then open http://127.0.0.1:5000")
    asked = task.request_fields_of(row)
    print(f"served request        : {json.dumps(asked)[:300] or 'ECG only'} "
          f"(reference {task.reference(row)!r})")
    print(f"served answer         : HTTP {resp.status_code} in {latency * 1000:.0f} ms -> "
          f"{json.dumps(served)[:600]}")
    print(f"total time            : {time.perf_counter() - t0:.0f} s")
    return {"train_run_id": res.run_id, "eval": ev, "sweep_run_id": sweep.parent_run_id,
            "registered": {"ref": ref, "version": version.version, "run_id": winner},
            "served": served, "status": resp.status_code}
