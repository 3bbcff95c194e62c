"""``ecglm demo CONFIG``: shards -> train -> evaluate -> sweep -> serve one real request ->
shut down, with one banner per stage and a summary at the end."""

from __future__ import annotations

import json
import time
from typing import Any

import requests

from ecglm.config import ExperimentConfig
from ecglm.checkpoint import resolve_checkpoint
from ecglm.recipes.common import evaluate_prepared, ray_lifecycle
from ecglm.serving.launch import start, stop
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
    _banner("1/5 data: shards + retrieval index")
    prep = prepare(cfg)
    cfg, task = prep.cfg, prep.task
    man = prep.shards.manifest
    kind = man.get("kind")
    print(f"[demo] data source: {kind} ({man.get('source')})")
    print(f"[demo] counts: {json.dumps(man.get('counts'))}")

    _banner("2/5 train (Ray Train, " + cfg.train.strategy + ") + evaluate")
    res = run_training(cfg, prepared=prep, run_name=f"{cfg.name}-demo")
    ev = evaluate_prepared(prep, res.checkpoint_dir, res.run_id)

    _banner("3/5 sweep (Ray Tune + ASHA, one MLflow run per trial)")
    sweep = run_sweep(cfg)
    for row in sweep.table:
        print(f"[demo] trial {row}")
    print(f"[demo] best trial {sweep.best_overrides}: {cfg.tune.metric}={sweep.best_metric:.4f} "
          f"(MLflow run {sweep.best_mlflow_run_id})")

    _banner("4/5 serve (Ray Serve: ingress -> encoder -> retriever -> LLM)")
    serve_ckpt = res.checkpoint_dir
    if (sweep.best_mlflow_run_id and res.metrics.get("val_loss") is not None
            and sweep.best_metric < float(res.metrics["val_loss"])):
        serve_ckpt, _ = resolve_checkpoint(cfg, sweep.best_mlflow_run_id)
        print(f"[demo] serving the sweep winner {sweep.best_mlflow_run_id}")
    else:
        print(f"[demo] serving the main run {res.run_id}")
    rows = split_rows(prep, cfg.evaluation.split) or split_rows(prep, "valid")
    row = next((r for r in rows if r.n_ecg == 1), rows[0])
    url = start(cfg, serve_ckpt, prep.retrieval.folder)
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
    print(f"MLflow training run   : {res.run_id}")
    print(f"MLflow sweep run      : {sweep.parent_run_id} (best trial {sweep.best_mlflow_run_id})")
    print(f"MLflow UI             : bash mlflow/start_server.sh  "
          f"(store {cfg.tracking.tracking_uri}) then open http://127.0.0.1:5000")
    asked = task.request_fields_of(row)
    print(f"served request        : {json.dumps(asked)[:300] or 'ECG only'} "
          f"(reference {task.reference(row)!r})")
    print(f"served answer         : HTTP {resp.status_code} in {latency * 1000:.0f} ms -> "
          f"{json.dumps(served)[:600]}")
    print(f"total time            : {time.perf_counter() - t0:.0f} s")
    return {"train_run_id": res.run_id, "eval": ev, "sweep_run_id": sweep.parent_run_id,
            "served": served, "status": resp.status_code}
