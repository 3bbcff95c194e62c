"""Load and chaos benchmark of the served tiny model: closed-loop HTTP clients against
``POST <url>v1/answer`` of the Ray Serve application (``jobs/configs/tiny.yaml``, synthetic
data, a seeded untrained checkpoint), all in one run on one local Ray.

Phases (the app is deployed twice; replica counts are fixed, min = max):

1. *Batched app*: ``serve.encoder|retriever|llm.max_batch_size = --batch`` (16), the LLM at
   ``--llm-replicas`` (2), ingress/encoder/retriever at 1. A warm-up, then closed-loop clients
   (threads, one ``requests.Session`` each, the next request sent when the previous answers)
   at concurrency 1, 4, 16 and 64: p50/p95/p99 latency (ms) and requests/s per level.
2. *Chaos* on the batched app, 16 clients: after ``--kill-after-s`` one LLM replica's process
   is killed (SIGKILL of its pid, or ``ray.kill``); clients keep going until Serve runs the
   replica count again (plus a few settle seconds) and the phase's request share is sent.
   Twice: clients without retries (``chaos_failed_fraction``, goal < 1%), then clients that
   retry 502/503/504 (``--retry-status``) and connection errors (bounded attempts,
   exponential backoff; ``chaos_failed_fraction_with_retry``, goal 0). ``recovery_s``:
   seconds from the kill until the killed replica is gone, a new one exists and Serve
   reports the count RUNNING again.
3. *Unbatched app*: the same replica counts with every ``max_batch_size`` 1, a warm-up, then
   16 clients; ``batched_vs_unbatched_16`` = batched over unbatched requests/s (goal >= 3).

Request bodies are 8 single-ECG QA rows of the test split as JSON (``ecg`` in mV rounded to
1 uV, the shards' own resolution: ~88 kB at 100 Hz x 10 s), encoded once.
``--requests`` (default 10,000) is spread over the phases by :data:`SHARES`; chaos phases may
send more (they run until recovery). requests/s counts 200 answers per wall second of the
level; latency percentiles are over 200 answers, measured by the client; each phase also keeps
the mean of the server's ``timings_ms`` stages. ``errors_5xx`` counts 5xx answers outside the
chaos phases (goal 0); chaos failures are reported per run. The clients run in this process,
on the same cores as Serve: on the 2-core machine they take part of the CPU they measure.

Prints progress lines (rates, ETA), then the JSON headline last, also written to
``jobs/bench/results/serve_<quick|full>.json``: ``latency_ms``, ``requests_per_s``,
``batched_vs_unbatched_16``, ``requests``, ``errors_5xx``, ``chaos_failed_fraction`` plus
``chaos_failed_fraction_with_retry``, ``recovery_s``, ``goals_met`` and details.

``--quick`` (every key kept; ~3.5 minutes on 2 cores): 1,000 requests instead of 10,000
(fewer per level), the replica killed 3 s into each chaos run instead of 10 s, 2 s of settling
instead of 5 s. A chaos run lasts at least the replica's recovery (~25-30 s here), so it sends
more than its share in quick mode.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "platform"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # serve_load, when imported as a module

from serve_load import (  # noqa: E402
    RETRY_STATUSES,
    RetryPolicy,
    closed_loop,
    log_line,
    summarize,
)

LEVELS = (1, 4, 16, 64)
CHAOS_CONCURRENCY = 16
SHARES = {"warmup_batched": 0.025, "c1": 0.05, "c4": 0.10, "c16": 0.15, "c64": 0.20,
          "chaos_no_retry": 0.15, "chaos_with_retry": 0.15, "warmup_unbatched": 0.025,
          "unbatched_c16": 0.15}
"""Share of ``--requests`` per phase (sums to 1)."""
OTHER_LEVEL_SHARE = 0.1
WARMUP_CONCURRENCY = 4
BATCHED = ("encoder", "retriever", "llm")
"""Deployments whose ``max_batch_size`` differs between the two apps (the ingress never
batches)."""
REQUIRED_KEYS = ("latency_ms", "requests_per_s", "batched_vs_unbatched_16", "requests",
                 "errors_5xx", "chaos_failed_fraction")
LLM_DEPLOYMENT = "LLM"


# --------------------------------------------------------------------------------------------
# request plan (pure)
# --------------------------------------------------------------------------------------------

def plan_requests(total: int, levels: Sequence[int] = LEVELS) -> dict[str, int]:
    """Requests per phase: :data:`SHARES` of ``total`` (levels outside :data:`LEVELS` get
    :data:`OTHER_LEVEL_SHARE`; shares renormalised), each at least twice its concurrency."""
    shares = {k: v for k, v in SHARES.items() if not _is_level(k)}
    shares |= {f"c{c}": SHARES.get(f"c{c}", OTHER_LEVEL_SHARE) for c in levels}
    scale = 1.0 / sum(shares.values())
    return {k: max(round(total * v * scale), 2 * phase_concurrency(k)) for k, v in shares.items()}


def _is_level(phase: str) -> bool:
    return phase.startswith("c") and phase[1:].isdigit()


def phase_concurrency(phase: str) -> int:
    """Clients of a phase: ``c<N>`` -> N, warm-ups :data:`WARMUP_CONCURRENCY`, chaos and
    unbatched :data:`CHAOS_CONCURRENCY` (16)."""
    if _is_level(phase):
        return int(phase[1:])
    return WARMUP_CONCURRENCY if phase.startswith("warmup") else CHAOS_CONCURRENCY


# --------------------------------------------------------------------------------------------
# headline (pure)
# --------------------------------------------------------------------------------------------

def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 3) if a is not None and b else None


def _total(phases: Sequence[Mapping[str, Any]], key: str) -> Optional[int]:
    """Sum of ``key`` over ``phases``; None when no phase ran."""
    return sum(p.get(key, 0) for p in phases) if phases else None


def goals_met(head: Mapping[str, Any]) -> dict[str, bool]:
    """The benchmark's goals, each True/False (a missing figure is not met)."""
    ratio = head.get("batched_vs_unbatched_16")
    chaos = head.get("chaos_failed_fraction")
    retry = head.get("chaos_failed_fraction_with_retry")
    rec = head.get("recovery_s") or {}
    return {"batched_vs_unbatched_16_ge_3": ratio is not None and ratio >= 3.0,
            "zero_5xx": head.get("errors_5xx") == 0,
            "chaos_failed_fraction_lt_1pct": chaos is not None and chaos < 0.01,
            "chaos_failed_fraction_with_retry_zero": retry == 0,
            "replica_recovered": bool(rec) and all(v is not None for v in rec.values())}


def headline(phases: Mapping[str, Mapping[str, Any]], levels: Sequence[int],
             extras: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The JSON headline from per-phase summaries (:func:`summarize`, chaos phases with
    ``recovery_s``). Every key of :data:`REQUIRED_KEYS` is present; a phase that did not run
    gives None in its place (``errors_5xx`` too: 5xx outside the chaos runs, None when no
    such phase ran)."""
    def get(phase: str, key: str) -> Any:
        return (phases.get(phase) or {}).get(key)

    non_chaos = [p for name, p in phases.items() if not name.startswith("chaos")]
    chaos = {k: phases[f"chaos_{k}"] for k in ("no_retry", "with_retry")
             if f"chaos_{k}" in phases}
    head: dict[str, Any] = {
        "latency_ms": {str(c): get(f"c{c}", "latency_ms") for c in levels},
        "requests_per_s": {str(c): get(f"c{c}", "requests_per_s") for c in levels},
        "batched_vs_unbatched_16": _ratio(get("c16", "requests_per_s"),
                                          get("unbatched_c16", "requests_per_s")),
        "requests": sum(p.get("sent", 0) for p in phases.values()),
        "errors_5xx": _total(non_chaos, "errors_5xx"),
        "chaos_failed_fraction": get("chaos_no_retry", "failed_fraction"),
        "chaos_failed_fraction_with_retry": get("chaos_with_retry", "failed_fraction"),
        "recovery_s": {k: p.get("recovery_s") for k, p in chaos.items()},
        "errors_non_200": _total(non_chaos, "non_200"),
        "batched_requests_per_s_16": get("c16", "requests_per_s"),
        "unbatched_requests_per_s_16": get("unbatched_c16", "requests_per_s"),
        "unbatched_latency_ms_16": get("unbatched_c16", "latency_ms"),
        "attempts": sum(p.get("attempts", 0) for p in phases.values()),
        "phases": {name: dict(p) for name, p in phases.items()},
    }
    head.update(extras or {})
    head["goals_met"] = goals_met(head)
    return head


# --------------------------------------------------------------------------------------------
# config, model, app (Ray)
# --------------------------------------------------------------------------------------------

def app_overrides(batch: int, llm_replicas: int) -> list[str]:
    """Dotted ``serve.*`` overrides of one app: fixed replica counts (ingress, encoder and
    retriever 1, the LLM ``llm_replicas``), ``max_batch_size = batch`` on the model
    deployments, admission limits that let batches fill and 64 clients in."""
    out: list[str] = []
    for name, replicas, ongoing in (("ingress", 1, 64), ("encoder", 1, 64),
                                    ("retriever", 1, 64), ("llm", llm_replicas, 32)):
        out += [f"serve.{name}.min_replicas={replicas}", f"serve.{name}.max_replicas={replicas}",
                f"serve.{name}.max_ongoing_requests={max(ongoing, batch)}"]
        if name in BATCHED:
            out.append(f"serve.{name}.max_batch_size={batch}")
    return out


def bench_config(root: Path, port: int, batch: int, llm_replicas: int,
                 extra: Sequence[str] = ()) -> Any:
    """``jobs/configs/tiny.yaml`` with every output under ``root``, served on ``port`` with
    :func:`app_overrides`; ``extra`` dotted overrides last."""
    from ecglm.config import load_config

    return load_config(REPO / "jobs/configs/tiny.yaml", [
        f"data.synthetic_root={root}/synthetic", f"data.shard_dir={root}/shards",
        f"llm.cache_dir={root}/models", f"tracking.tracking_uri=sqlite:///{root}/mlflow.db",
        f"tracking.artifact_root={root}/artifacts", f"output_dir={root}/runs",
        f"train.storage_path={root}/ray", f"serve.port={port}",
        *app_overrides(batch, llm_replicas), *extra])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare_served(cfg: Any, root: Path) -> tuple[Any, Path]:
    """Start Ray, prepare shards/rows/retrieval and write a seeded (untrained) checkpoint of
    ``build_ecg_lm(cfg)`` under ``root/checkpoint``. Returns ``(prepared, checkpoint_dir)``."""
    import torch

    from ecglm import checkpoint
    from ecglm.models.ecg_lm import build_ecg_lm
    from ecglm.train.run import prepare
    from ecglm.utils.ray_env import init_ray

    init_ray(cfg.train.ray_num_cpus)
    prep = prepare(cfg)
    folder = root / "checkpoint"
    if not (folder / checkpoint.TRAINABLE_FILE).is_file():
        torch.manual_seed(prep.cfg.seed)
        model = build_ecg_lm(prep.cfg)
        checkpoint.write_checkpoint(folder, model.trainable_state_dict(), prep.cfg, 0, {})
    return prep, folder


def ecg_lists(signal: Any) -> list[list[float]]:
    """``signal (12, T)`` mV as JSON-ready lists rounded to 1 uV (0.001 mV), the resolution the
    shards store (int16 microvolts): lossless, and about a third of the bytes of float32
    reprs."""
    import numpy as np

    return np.round(np.asarray(signal, dtype=np.float64), 3).tolist()


def request_bodies(prep: Any, n: int = 8) -> list[bytes]:
    """JSON bodies (``ecg`` mV lists (:func:`ecg_lists`), ``fs``, ``question``, ``options``)
    of up to ``n`` single-ECG QA rows, encoded once."""
    from ecglm.train.run import split_rows

    bodies: list[bytes] = []
    for split in ("test", "valid", "train"):
        for row in split_rows(prep, split):
            if row.n_ecg == 1 and len(bodies) < n:
                bodies.append(json.dumps({"ecg": ecg_lists(row.ecgs()[0]),
                                          "fs": prep.cfg.data.fs, "question": row.question,
                                          "options": list(row.options)}).encode())
        if len(bodies) >= n:
            break
    if not bodies:
        raise RuntimeError("no single-ECG QA row in the tiny data set")
    return bodies


def auth_headers(env: Mapping[str, str]) -> dict[str, str]:
    """JSON content type, plus the bearer token when ``ECGLM_SERVE_TOKEN`` is set."""
    headers = {"Content-Type": "application/json"}
    if env.get("ECGLM_SERVE_TOKEN"):
        headers["Authorization"] = f"Bearer {env['ECGLM_SERVE_TOKEN']}"
    return headers


# --------------------------------------------------------------------------------------------
# chaos (Ray)
# --------------------------------------------------------------------------------------------

def llm_replicas(app: str) -> dict[str, Optional[int]]:
    """ALIVE LLM replica actors of ``app``: actor name -> pid (None when the State API is
    unavailable and named actors are listed instead)."""
    import ray

    try:
        from ray.util.state import list_actors

        rows = list_actors(filters=[("class_name", "=", f"ServeReplica:{app}:{LLM_DEPLOYMENT}"),
                                    ("state", "=", "ALIVE")], raise_on_missing_output=False)
        return {str(r.name): (int(r.pid) if r.pid else None) for r in rows}
    except Exception:  # noqa: BLE001 - the State API needs the dashboard; GCS names do not
        prefix = f"SERVE_REPLICA::{app}#{LLM_DEPLOYMENT}#"
        return {a["name"]: None for a in ray.util.list_named_actors(all_namespaces=True)
                if a.get("namespace") == "serve" and a["name"].startswith(prefix)}


def kill_replica(name: str, pid: Optional[int], method: str) -> str:
    """Kill one replica: ``sigkill`` its process (when its pid is known) or ``ray.kill`` its
    actor. Returns what was done."""
    if method == "sigkill" and pid:
        os.kill(pid, signal.SIGKILL)
        return f"SIGKILL pid {pid}"
    import ray

    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    return "ray.kill"


def running_replicas(app: str, deployment: str = LLM_DEPLOYMENT) -> int:
    """Replicas of ``deployment`` that ``serve.status()`` reports RUNNING."""
    from ray import serve

    status = serve.status().applications[app].deployments[deployment]
    return int(status.replica_states.get("RUNNING", 0))


def wait_recovered(app: str, victim: str, before: set[str], want: int, timeout_s: float,
                   poll_s: float = 0.25) -> Optional[float]:
    """Seconds until ``victim`` is gone, a replica not in ``before`` is alive and Serve reports
    ``want`` LLM replicas RUNNING; None after ``timeout_s``."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        names = llm_replicas(app)
        if (victim not in names and set(names) - before and len(names) >= want
                and running_replicas(app) >= want):
            return round(time.perf_counter() - t0, 2)
        time.sleep(poll_s)
    return None


@dataclass
class ChaosSpec:
    """One chaos run's settings."""

    app: str
    kill_after_s: float
    settle_s: float
    recover_timeout_s: float
    kill_method: str
    retry: Optional[RetryPolicy] = None
    log: Callable[[str], None] = log_line


def chaos_phase(label: str, url: str, bodies: Sequence[bytes], headers: Mapping[str, str],
                n: int, spec: ChaosSpec, timeout_s: float, progress_s: float) -> dict[str, Any]:
    """16 closed-loop clients; one LLM replica killed ``kill_after_s`` in; clients stop once
    ``n`` are sent and the replica count has recovered (+ ``settle_s``)."""
    hold = threading.Event()
    hold.set()
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(out=closed_loop(
        label, url, bodies, CHAOS_CONCURRENCY, n, headers, spec.retry, timeout_s, progress_s,
        hold, spec.log)), daemon=True)
    t0 = time.perf_counter()
    runner.start()
    try:
        time.sleep(spec.kill_after_s)
        before = llm_replicas(spec.app)
        if not before:
            raise RuntimeError(f"no ALIVE LLM replica of app {spec.app!r} to kill")
        victim = sorted(before)[0]
        how = kill_replica(victim, before[victim], spec.kill_method)
        kill_at = time.perf_counter() - t0
        spec.log(f"[serve-bench] {label}: killed LLM replica {victim} ({how}) at "
                 f"{kill_at:.1f} s, {len(before)} before")
        recovery = wait_recovered(spec.app, victim, set(before), len(before),
                                  spec.recover_timeout_s)
        spec.log(f"[serve-bench] {label}: replica count back to {len(before)} after "
                 f"{recovery} s")
        time.sleep(spec.settle_s)
    finally:
        hold.clear()
        runner.join()
    outcomes, wall = result["out"]
    stats = summarize(outcomes, wall)
    stats.update(recovery_s=recovery, killed=victim, kill=how, kill_at_s=round(kill_at, 2),
                 replicas=len(before), retry=spec.retry is not None,
                 failures_after_kill_s=[round(o.start_s - kill_at, 2)
                                        for o in outcomes if not o.ok][:20])
    return stats


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Arguments; ``--quick`` fills the defaults it changes (see the module docstring)."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,000 requests, short chaos runs")
    ap.add_argument("--requests", type=int, default=None, help="total (default 10,000)")
    ap.add_argument("--levels", default="1,4,16,64", help="client concurrencies, comma list")
    ap.add_argument("--batch", type=int, default=16, help="max_batch_size of the batched app")
    ap.add_argument("--llm-replicas", type=int, default=2)
    ap.add_argument("--kill-after-s", type=float, default=None, help="default 10 (quick 3)")
    ap.add_argument("--settle-s", type=float, default=None, help="default 5 (quick 2)")
    ap.add_argument("--recover-timeout-s", type=float, default=120.0)
    ap.add_argument("--kill-method", choices=["sigkill", "ray"], default="sigkill")
    ap.add_argument("--retry-attempts", type=int, default=5)
    ap.add_argument("--retry-backoff-s", type=float, default=0.05)
    ap.add_argument("--retry-status", default=",".join(map(str, sorted(RETRY_STATUSES))),
                    help="HTTP statuses the retrying clients retry (connection errors always)")
    ap.add_argument("--timeout-s", type=float, default=60.0, help="per HTTP request")
    ap.add_argument("--progress-s", type=float, default=5.0)
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: temp)")
    ap.add_argument("--out", type=Path, default=None,
                    help="headline file (default jobs/bench/results/serve_<mode>.json)")
    ap.add_argument("--override", action="append", default=[],
                    help="extra dotted config override (both apps)")
    args = ap.parse_args(argv)
    args.levels = tuple(int(x) for x in str(args.levels).split(",") if x.strip())
    if 16 not in args.levels or any(c < 1 for c in args.levels):
        ap.error("--levels: positive integers including 16")
    args.retry_status = frozenset(int(x) for x in str(args.retry_status).split(",") if x.strip())
    args.requests = args.requests or (1000 if args.quick else 10_000)
    args.kill_after_s = args.kill_after_s if args.kill_after_s is not None else (
        3.0 if args.quick else 10.0)
    args.settle_s = args.settle_s if args.settle_s is not None else (2.0 if args.quick else 5.0)
    mode = "quick" if args.quick else "full"
    args.out = args.out or REPO / "jobs" / "bench" / "results" / f"serve_{mode}.json"
    return args


def run_app(label: str, cfg: Any, checkpoint: Path, retrieval: Path) -> tuple[str, float]:
    """Deploy the app (after stopping a previous one); its URL and seconds to healthy."""
    from ecglm.serving.launch import start, stop

    stop()
    t0 = time.perf_counter()
    url = start(cfg, checkpoint, retrieval, timeout_s=300)
    ready = round(time.perf_counter() - t0, 1)
    print(f"[serve-bench] {label} app healthy at {url} after {ready:.1f} s", flush=True)
    return url, ready


@dataclass
class Run:
    """What one benchmark run measured so far (kept when a later phase fails)."""

    args: argparse.Namespace
    plan: dict[str, int]
    headers: dict[str, str]
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def level(self, name: str, url: str, bodies: Sequence[bytes],
              retry: Optional[RetryPolicy] = None) -> None:
        """One closed-loop phase of ``plan[name]`` requests, summarized into ``phases``."""
        outcomes, wall = closed_loop(name, url + "v1/answer", bodies, phase_concurrency(name),
                                     self.plan[name], self.headers, retry, self.args.timeout_s,
                                     self.args.progress_s)
        p = self.phases[name] = summarize(outcomes, wall)
        print(f"[serve-bench] {name}: {p['sent']} sent in {p['wall_s']} s, "
              f"{p['requests_per_s']} req/s, latency {p['latency_ms']} ms, "
              f"statuses {p['statuses']}", flush=True)

    def chaos(self, name: str, url: str, bodies: Sequence[bytes], app: str,
              retry: Optional[RetryPolicy]) -> None:
        """One chaos run (:func:`chaos_phase`), summarized into ``phases``."""
        a = self.args
        spec = ChaosSpec(app, a.kill_after_s, a.settle_s, a.recover_timeout_s, a.kill_method,
                         retry)
        p = self.phases[name] = chaos_phase(name, url + "v1/answer", bodies, self.headers,
                                            self.plan[name], spec, a.timeout_s, a.progress_s)
        print(f"[serve-bench] {name}: {p['failed']}/{p['sent']} failed "
              f"({p['failed_fraction']}), statuses {p['statuses']}, "
              f"recovery {p['recovery_s']} s", flush=True)


def run_phases(run: Run, work: Path) -> None:
    """Setup, the batched app (warm-up, levels, two chaos runs), the unbatched app."""
    from ecglm.serving.launch import APP_NAME

    a = run.args
    port = free_port()
    cfg_b = bench_config(work, port, a.batch, a.llm_replicas, a.override)
    cfg_u = bench_config(work, port, 1, a.llm_replicas, a.override)
    run.info["config"] = {
        "batch": a.batch, "llm_replicas": a.llm_replicas, "batched_deployments": list(BATCHED),
        "llm_health_check_period_s": cfg_b.serve.llm.health_check_period_s,
        "batch_wait_timeout_s": cfg_b.serve.llm.batch_wait_timeout_s,
        "kill_method": a.kill_method, "kill_after_s": a.kill_after_s, "settle_s": a.settle_s,
        "retry": {"attempts": a.retry_attempts, "backoff_s": a.retry_backoff_s,
                  "on": sorted(a.retry_status) + ["connection error"]},
        "overrides": list(a.override)}
    t0 = time.perf_counter()
    prep, ckpt = prepare_served(cfg_b, work)
    bodies = request_bodies(prep)
    run.info["setup_s"] = round(time.perf_counter() - t0, 1)
    run.info["body_kb"] = round(len(bodies[0]) / 1e3, 1)
    print(f"[serve-bench] data + checkpoint ready in {run.info['setup_s']} s ({len(bodies)} "
          f"bodies, {run.info['body_kb']} kB each)", flush=True)
    ready = run.info["app_ready_s"] = {}
    url, ready["batched"] = run_app("batched", cfg_b, ckpt, prep.retrieval.folder)
    run.level("warmup_batched", url, bodies)
    for conc in a.levels:
        run.level(f"c{conc}", url, bodies)
    run.chaos("chaos_no_retry", url, bodies, APP_NAME, None)
    run.chaos("chaos_with_retry", url, bodies, APP_NAME,
              RetryPolicy(a.retry_attempts, a.retry_backoff_s, statuses=a.retry_status))
    url, ready["unbatched"] = run_app("unbatched", cfg_u, ckpt, prep.retrieval.folder)
    run.level("warmup_unbatched", url, bodies)
    run.level("unbatched_c16", url, bodies)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    for key, value in (("RAY_USAGE_STATS_ENABLED", "0"), ("RAY_AUTH_MODE", "disabled"),
                       ("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                       ("RAY_SERVE_LOG_TO_STDERR", "0")):  # replica logs stay in files
        os.environ.setdefault(key, value)
    t_all = time.perf_counter()
    load0 = os.getloadavg()[0]
    work = args.work or Path(tempfile.mkdtemp(prefix="ecglm-bench-serve-"))
    run = Run(args, plan_requests(args.requests, args.levels), auth_headers(os.environ))
    print(f"[serve-bench] mode={'quick' if args.quick else 'full'} requests={args.requests} "
          f"plan={run.plan} work={work}", flush=True)
    import ray

    error = None
    try:
        run_phases(run, work)
    except Exception as exc:  # noqa: BLE001 - reported in the headline with what was measured
        import traceback

        traceback.print_exc()
        error = f"{type(exc).__name__}: {exc}"[:500]
    finally:
        if ray.is_initialized():
            from ecglm.serving.launch import stop

            stop()
            ray.shutdown()
    extras = {"quick": bool(args.quick), "requests_planned": args.requests, "plan": run.plan,
              **run.info, "loadavg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
              "cpus": os.cpu_count(), "total_s": round(time.perf_counter() - t_all, 1),
              "error": error}
    head = headline(run.phases, args.levels, extras)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(head, indent=1) + "\n")
    print(f"[serve-bench] wrote {args.out}; goals {head['goals_met']}", flush=True)
    print(json.dumps(head), flush=True)
    return 0 if error is None else 1


if __name__ == "__main__":
    sys.exit(main())
