"""Benchmark the sweep machinery: ASHA against FIFO on the same 8 trials, and Optuna against
random search at the same budget, all in one run on the tiny preset (CPU, Ray Train trials).

Space (8 trials): ``lora.r`` in {2, 4, 8, 16} x ``train.lr`` in {1e-3, 3e-3}, grid search,
each trial ``--steps`` optimizer steps with an evaluation every ``--eval-every`` steps. The
ASHA and FIFO sweeps run exactly these 8 configurations; ``asha_vs_fifo_speedup`` is FIFO's
wall time over ASHA's and the best metric of each is reported (goal: ASHA at least 2x faster
with a best metric within noise, i.e. within ``noise`` of FIFO's: the spread of the metric
over FIFO's trials that share the winner's rank, estimated as the standard deviation of
FIFO's metrics over the best half).

Optuna (TPE) and random search then sample ``--budget`` trials each from the continuous
version of the space (``lora.r`` lograndint [2, 33), ``train.lr`` loguniform [3e-4, 1e-2]),
ASHA-scheduled, same seed.

``--metric`` is what trials are ranked on: ``val_loss`` (default: the tiny random model's exact
match is 0 everywhere, so the task metric cannot rank them) or ``task``.

Prints one line per sweep, then the JSON headline last: ``asha_vs_fifo_speedup``,
``best_metric_asha``, ``best_metric_fifo``, ``best_metric_optuna``, ``best_metric_random``,
wall seconds of each sweep, trial counts and the machine's load.
``--quick`` (a smoke run that keeps every key, about 10 minutes on 2 cores): a 4-trial grid
(``lora.r`` in {2, 8}), one Train worker per trial, 4 steps and a budget of 2. On 2 CPU
cores a tiny trial costs 35-55 s of fixed overhead (worker processes, data pipeline, model
build, evaluation) against well under a second per step, which caps what early stopping can
save: run the full mode (48 steps per trial) to see ASHA's saving on training time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "platform"))

GRID = "{lora.r: [2, 4, 8, 16], train.lr: [1.0e-3, 3.0e-3]}"
QUICK_GRID = "{lora.r: [2, 8], train.lr: [1.0e-3, 3.0e-3]}"
SAMPLED = "{lora.r: {lograndint: [2, 33]}, train.lr: {loguniform: [3.0e-4, 1.0e-2]}}"


def sweep_config(root: Path, name: str, space: str, *extra: str) -> Any:
    """The tiny preset with every output under ``root`` and the sweep's overrides."""
    from ecglm.config import load_config

    return load_config(REPO / "jobs/configs/tiny.yaml", [
        f"name={name}", f"data.synthetic_root={root}/synthetic", f"data.shard_dir={root}/shards",
        f"llm.cache_dir={root}/models", f"tracking.tracking_uri=sqlite:///{root}/mlflow.db",
        f"tracking.artifact_root={root}/artifacts", f"output_dir={root}/runs",
        f"train.storage_path={root}/ray", f"tune.search_space={space}", *extra])


def run_one(label: str, cfg: Any) -> dict[str, Any]:
    """Run one sweep; its wall time, best metric, trial count and early stops."""
    from ecglm.tuning.sweep import run_sweep

    t0 = time.perf_counter()
    res = run_sweep(cfg)
    wall = time.perf_counter() - t0
    metrics = [row[res.metric] for row in res.table if row.get(res.metric) is not None]
    out = {"wall_s": round(wall, 1), "best_metric": res.best_metric, "trials": res.n_trials,
           "early_stopped": sum(bool(r["early_stopped"]) for r in res.table),
           "metrics": metrics, "metric": res.metric, "report": res.report}
    print(f"[bench] {label}: {wall:.0f} s, {res.n_trials} trials "
          f"({out['early_stopped']} stopped early), best {res.metric} = {res.best_metric:.4f}",
          flush=True)
    return out


def noise(metrics: Sequence[float], mode: str) -> float:
    """Spread of the better half of ``metrics`` (standard deviation; 0 with < 2 values)."""
    ranked = sorted(metrics, reverse=(mode == "max"))
    half = ranked[: max(2, len(ranked) // 2)]
    return statistics.stdev(half) if len(half) >= 2 else 0.0


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4-trial grid, 4 steps, budget 2")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per trial")
    ap.add_argument("--eval-every", type=int, default=None)
    ap.add_argument("--budget", type=int, default=None, help="Optuna/random trials")
    ap.add_argument("--metric", default="val_loss", choices=["val_loss", "task"])
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temp dir)")
    args = ap.parse_args(argv)
    steps = args.steps or (4 if args.quick else 48)
    every = args.eval_every or (2 if args.quick else 8)
    budget = args.budget or (2 if args.quick else 8)
    grid = QUICK_GRID if args.quick else GRID
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from ecglm.recipes.common import ray_lifecycle

    work = args.work or Path(tempfile.mkdtemp(prefix="ecglm-bench-sweep-"))
    common = [f"train.max_steps={steps}", f"train.eval_every={every}",
              f"tune.metric={args.metric}", "tune.grace_period=1", "tune.eval_max_items=16",
              "tune.max_concurrent_trials=1", *(["train.num_workers=1"] if args.quick else [])]
    load0 = os.getloadavg()[0]
    out: dict[str, dict[str, Any]] = {}
    cfg0 = sweep_config(work, "bench-asha", grid, *common, "tune.search=grid",
                        "tune.scheduler=asha")
    with ray_lifecycle(cfg0):
        out["asha"] = run_one("ASHA, grid", cfg0)
        out["fifo"] = run_one("FIFO, grid", sweep_config(
            work, "bench-fifo", grid, *common, "tune.search=grid", "tune.scheduler=fifo"))
        for search in ("optuna", "random"):
            out[search] = run_one(f"{search}, {budget} trials, ASHA", sweep_config(
                work, f"bench-{search}", SAMPLED, *common, f"tune.search={search}",
                f"tune.num_samples={budget}", "tune.scheduler=asha", "tune.seed=0"))
    mode = "min" if args.metric == "val_loss" else "max"
    fifo_noise = noise(out["fifo"]["metrics"], mode)
    gap = out["asha"]["best_metric"] - out["fifo"]["best_metric"]
    head = {
        "asha_vs_fifo_speedup": round(out["fifo"]["wall_s"] / out["asha"]["wall_s"], 3),
        "best_metric_asha": out["asha"]["best_metric"],
        "best_metric_fifo": out["fifo"]["best_metric"],
        "best_metric_optuna": out["optuna"]["best_metric"],
        "best_metric_random": out["random"]["best_metric"],
        "metric": out["asha"]["metric"], "mode": mode,
        "asha_minus_fifo": round(gap, 4), "fifo_noise": round(fifo_noise, 4),
        "asha_within_noise": abs(gap) <= max(fifo_noise, 1e-12),
        "wall_s": {k: v["wall_s"] for k, v in out.items()},
        "trials": {k: v["trials"] for k, v in out.items()},
        "early_stopped": {k: v["early_stopped"] for k, v in out.items()},
        "steps_per_trial": steps, "eval_every": every, "budget": budget,
        "reports": {k: v["report"] for k, v in out.items()},
        "loadavg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "quick": bool(args.quick),
    }
    print(json.dumps(head), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
