"""End-to-end workflows behind the CLI and ``jobs/``: train+eval, eval, serve, demo."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

from ecglm.checkpoint import resolve_checkpoint
from ecglm.config import ExperimentConfig
from ecglm.evaluation.run import evaluate
from ecglm.train.run import Prepared, TrainResult, prepare, qa_rows, run_training


def _eval_run(prep: Prepared, checkpoint_dir: Path, run_id: Optional[str]) -> dict[str, Any]:
    cfg = prep.cfg
    rows = qa_rows(prep, cfg.evaluation.split)
    train_rows = qa_rows(prep, "train") if cfg.evaluation.baselines else None
    from ecglm.evaluation.sections import build_sections

    sections = build_sections(prep, checkpoint_dir)
    if cfg.task == "qa":
        ev = evaluate(cfg, checkpoint_dir, rows, run_id, checkpoint_dir.parent / "eval",
                      train_rows, sections)
    else:
        from ecglm.evaluation.generation import evaluate_generation

        ev = evaluate_generation(cfg, checkpoint_dir, rows, run_id,
                                 checkpoint_dir.parent / "eval", train_rows,
                                 prep.retrieval.neighbour_ids, sections)
    report = ev.summary_path.parent / "report.html"
    return {"metrics": ev.metrics, "summary": str(ev.summary_path),
            **{sec.key: sec.summary for sec in sections},
            **({"report": str(report)} if report.exists() else {})}


def train_and_evaluate(cfg: ExperimentConfig, evaluate: bool = True) -> dict[str, Any]:
    """Train (Ray Train + MLflow), then evaluate on ``evaluation.split`` (exact match for
    ``qa``; text and grounding metrics for ``report``/``grounding``)."""
    res: TrainResult = run_training(cfg)
    out: dict[str, Any] = {
        "mlflow_run_id": res.run_id,
        "checkpoint": str(res.checkpoint_dir),
        "val_loss": res.metrics.get("val_loss"),
        "data_source": res.prepared.shards.manifest.get("kind"),
        "tracking_uri": res.prepared.cfg.tracking.tracking_uri,
    }
    if evaluate:
        out["eval"] = _eval_run(res.prepared, res.checkpoint_dir, res.run_id)
    return out


def evaluate_checkpoint(cfg: ExperimentConfig, checkpoint: str) -> dict[str, Any]:
    """Evaluate a checkpoint folder or the ``checkpoint`` artifact of an MLflow run id."""
    prep = prepare(cfg)
    ckpt, run_id = resolve_checkpoint(prep.cfg, checkpoint)
    return {"mlflow_run_id": run_id, "checkpoint": str(ckpt), **_eval_run(prep, ckpt, run_id)}


def serve_forever(cfg: ExperimentConfig, checkpoint: str) -> None:
    """Deploy encoder -> retriever -> LLM for ``checkpoint`` and block until Ctrl-C."""
    from ecglm.serving.launch import start, stop

    prep = prepare(cfg)
    ckpt, _ = resolve_checkpoint(prep.cfg, checkpoint)
    url = start(prep.cfg, ckpt, prep.retrieval.folder)
    print(f"[serve] POST {url} (JSON: ecg [[12 x T numbers]], fs, question, options?) "
          "- Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop()


def _banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)), flush=True)


def run_demo(cfg: ExperimentConfig) -> dict[str, Any]:
    """Shards -> train -> evaluate -> sweep -> serve one real request -> shut down."""
    import requests

    from ecglm.data.shards import decode_signals
    from ecglm.serving.launch import start, stop
    from ecglm.tuning.sweep import run_sweep

    t0 = time.perf_counter()
    _banner("1/5 data: shards + retrieval index")
    prep = prepare(cfg)
    cfg = prep.cfg
    man = prep.shards.manifest
    kind = man.get("kind")
    print(f"[demo] data source: {kind} ({man.get('source')})")
    print(f"[demo] counts: {json.dumps(man.get('counts'))}")

    _banner("2/5 train (Ray Train, " + cfg.train.strategy + ") + evaluate")
    res = run_training(cfg, prepared=prep, run_name=f"{cfg.name}-demo")
    ev = _eval_run(prep, res.checkpoint_dir, res.run_id)

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
    rows = qa_rows(prep, cfg.evaluation.split) or qa_rows(prep, "valid")
    row = next((r for r in rows if int(r["n_ecg"]) == 1), rows[0])
    ecg = decode_signals(row["signals"], int(row["n_ecg"]), int(row["n_samples"]))
    url = start(cfg, serve_ckpt, prep.retrieval.folder)
    try:
        body = {"ecg": ecg[0].round(4).tolist(), "fs": cfg.data.fs,
                "question": str(row["question"]), "options": list(row["options"])}
        t_req = time.perf_counter()
        resp = requests.post(url, json=body, timeout=120)
        latency = time.perf_counter() - t_req
        served = resp.json()
    finally:
        _banner("5/5 shut down")
        stop()

    _banner("summary")
    em = {k: round(v, 3) for k, v in ev["metrics"].items() if k.startswith("em/")}
    print(f"data source           : {kind}")
    print(f"exact match ({cfg.evaluation.split:5s})   : {json.dumps(em)}")
    for name in ("majority", "blind"):
        base = {k.split("/", 2)[2]: round(v, 3) for k, v in ev["metrics"].items()
                if k.startswith(f"baseline/{name}/em/") and k.count("/") == 3}
        if base:
            print(f"  {name + ' baseline':20s}: {json.dumps(base)}")
    if ev.get("report"):
        print(f"evaluation report     : {ev['report']}")
    print(f"MLflow training run   : {res.run_id}")
    print(f"MLflow sweep run      : {sweep.parent_run_id} (best trial {sweep.best_mlflow_run_id})")
    print(f"MLflow UI             : bash mlflow/start_server.sh  "
          f"(store {cfg.tracking.tracking_uri}) then open http://127.0.0.1:5000")
    print(f"served question       : {row['question']} (gold {list(row['answer'])})")
    print(f"served answer         : HTTP {resp.status_code} in {latency * 1000:.0f} ms -> "
          f"{json.dumps(served)[:600]}")
    print(f"total time            : {time.perf_counter() - t0:.0f} s")
    return {"train_run_id": res.run_id, "eval": ev, "sweep_run_id": sweep.parent_run_id,
            "served": served, "status": resp.status_code}
