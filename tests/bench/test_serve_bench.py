"""The serving benchmark (``jobs/bench/serve.py`` + ``serve_load.py``) without Ray:
percentiles and phase summaries, the request plan, the headline (every key kept, with or
without phases), argument defaults, the app configs it deploys, and the closed-loop clients
with and without retries against a local HTTP server that answers 503 a few times. The
benchmark itself (Serve, minutes) runs outside CI."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Iterator

import numpy as np
import pytest

from tests.helpers import REPO, load_script

SCRIPT = REPO / "jobs" / "bench" / "serve.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script(SCRIPT, "serve_bench")


@pytest.fixture(scope="module")
def load(bench: ModuleType) -> ModuleType:
    """``jobs/bench/serve_load.py``, as the benchmark imported it."""
    return sys.modules["serve_load"]


def test_percentile_matches_numpy(load: ModuleType) -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 100):
        xs = rng.exponential(50.0, n).tolist()
        for q in (0, 50, 95, 99, 100):
            assert load.percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    with pytest.raises(ValueError):
        load.percentile([], 50)


def test_summarize_counts_failures_and_uses_200s_for_latency(load: ModuleType) -> None:
    O = load.Outcome
    outs = [O(0.0, 10.0, 200), O(0.1, 20.0, 200), O(0.2, 30.0, 200), O(0.3, 5000.0, 503),
            O(0.4, 1.0, 500), O(0.5, 2.0, 0, 1, "ConnectionError"), O(0.6, 40.0, 422),
            O(0.7, 50.0, 200, 3, "200 without 'generated'")]
    s = load.summarize(outs, wall_s=2.0)
    assert (s["sent"], s["ok"], s["failed"]) == (8, 3, 5)
    assert s["non_200"] == 4 and s["errors_5xx"] == 2 and s["no_response"] == 1
    assert s["failed_fraction"] == pytest.approx(5 / 8)
    assert s["statuses"] == {"0": 1, "200": 4, "422": 1, "500": 1, "503": 1}
    assert s["latency_ms"]["p50"] == 20.0 and s["latency_ms"]["p99"] == pytest.approx(29.8)
    assert s["requests_per_s"] == 1.5 and s["attempts"] == 10
    empty = load.summarize([], 0.0)
    assert empty["latency_ms"] is None and empty["failed_fraction"] is None
    assert empty["requests_per_s"] is None


def test_read_answer(load: ModuleType) -> None:
    assert load.read_answer(b'{"generated": "yes", "timings_ms": {"total": 12.5}}') == (
        None, {"total": 12.5})
    assert load.read_answer(b'{"generated": "yes"}') == (None, None)
    assert load.read_answer(b'{"answer": "yes"}')[0] == "200 without 'generated'"
    assert load.read_answer(b"[1]")[0] == "200 without 'generated'"
    assert load.read_answer(b"<html>")[0] == "200 body is not JSON"


def test_mean_server_timings(load: ModuleType) -> None:
    O = load.Outcome
    outs = [O(0, 1, 200, 1, None, {"total": 10.0, "generate": 4.0}),
            O(0, 1, 200, 1, None, {"total": 20.0}), O(0, 1, 500, 1, None, {"total": 99.0})]
    assert load.mean_timings(outs) == {"total": 15.0, "generate": 4.0}
    assert load.mean_timings([O(0, 1, 200)]) is None


def test_ecg_lists_round_to_a_microvolt(bench: ModuleType) -> None:
    x = np.array([[0.1234567, -1.0004999]] * 12, dtype=np.float32)
    out = bench.ecg_lists(x)
    assert len(out) == 12 and out[0] == [0.123, -1.0]
    assert json.dumps(out[0]) == "[0.123, -1.0]"


def test_retry_policy_backoff_and_statuses(load: ModuleType) -> None:
    p = load.RetryPolicy(attempts=5, backoff_s=0.05, max_backoff_s=0.15)
    assert [p.delay_s(k) for k in (1, 2, 3, 4)] == [0.05, 0.1, 0.15, 0.15]
    assert p.should_retry(503) and p.should_retry(0) and not p.should_retry(500)
    assert not p.should_retry(200) and not p.should_retry(422)


def test_plan_spreads_the_total_over_every_phase(bench: ModuleType) -> None:
    plan = bench.plan_requests(10_000)
    assert set(plan) == set(bench.SHARES)
    assert sum(plan.values()) == 10_000
    assert plan["c64"] == 2000 and plan["c1"] == 500
    small = bench.plan_requests(100)
    assert small["c64"] == 128 and small["chaos_no_retry"] == 32  # >= 2 x concurrency
    custom = bench.plan_requests(1000, (2, 16))
    assert "c2" in custom and "c64" not in custom and "c1" not in custom


def _phase(load: ModuleType, n_ok: int, n_503: int = 0, wall: float = 1.0,
           recovery: float | None = None) -> dict:
    outs = [load.Outcome(0.0, 10.0 + i, 200) for i in range(n_ok)]
    outs += [load.Outcome(0.0, 1.0, 503)] * n_503
    s = load.summarize(outs, wall)
    if recovery is not None:
        s["recovery_s"] = recovery
    return s


def test_headline_keeps_every_key_without_phases(bench: ModuleType) -> None:
    head = bench.headline({}, bench.LEVELS, {"error": "boom"})
    assert set(bench.REQUIRED_KEYS) <= set(head)
    assert head["latency_ms"] == {"1": None, "4": None, "16": None, "64": None}
    assert head["requests_per_s"]["64"] is None
    assert head["batched_vs_unbatched_16"] is None and head["chaos_failed_fraction"] is None
    assert head["requests"] == 0 and head["errors_5xx"] is None and head["error"] == "boom"
    assert not any(head["goals_met"].values())
    json.dumps(head)


def test_headline_from_phases(bench: ModuleType, load: ModuleType) -> None:
    phases = {f"c{c}": _phase(load, 20) for c in bench.LEVELS}
    phases["c16"] = _phase(load, 60, wall=2.0)  # 30 req/s
    phases["unbatched_c16"] = _phase(load, 10, wall=1.0)  # 10 req/s
    phases["warmup_batched"] = _phase(load, 4)
    phases["chaos_no_retry"] = _phase(load, 995, n_503=5, recovery=7.5)  # 0.5 %
    phases["chaos_with_retry"] = _phase(load, 1000, recovery=8.0)
    head = bench.headline(phases, bench.LEVELS)
    assert set(bench.REQUIRED_KEYS) <= set(head)
    assert head["batched_vs_unbatched_16"] == 3.0
    assert head["requests_per_s"]["16"] == 30.0
    assert set(head["latency_ms"]["1"]) >= {"p50", "p95", "p99"}
    assert head["requests"] == 60 + 10 + 4 + 3 * 20 + 1000 + 1000
    assert head["errors_5xx"] == 0  # the chaos runs' 503s are reported apart
    assert head["chaos_failed_fraction"] == 0.005
    assert head["chaos_failed_fraction_with_retry"] == 0
    assert head["recovery_s"] == {"no_retry": 7.5, "with_retry": 8.0}
    assert all(head["goals_met"].values()), head["goals_met"]
    phases["c4"] = _phase(load, 20, n_503=1)
    assert bench.headline(phases, bench.LEVELS)["goals_met"]["zero_5xx"] is False


def test_parse_args_quick_and_full(bench: ModuleType) -> None:
    q = bench.parse_args(["--quick"])
    assert q.requests == 1000 and q.kill_after_s == 3.0 and q.settle_s == 2.0
    assert q.levels == (1, 4, 16, 64) and q.out.name == "serve_quick.json"
    assert q.retry_status == {502, 503, 504}
    assert bench.parse_args(["--retry-status", "500,503"]).retry_status == {500, 503}
    full = bench.parse_args(["--levels", "1,16", "--requests", "500", "--kill-method", "ray"])
    assert full.requests == 500 and full.kill_after_s == 10.0 and full.levels == (1, 16)
    assert full.out == REPO / "jobs" / "bench" / "results" / "serve_full.json"
    with pytest.raises(SystemExit):
        bench.parse_args(["--levels", "1,4"])  # the batched/unbatched comparison needs 16


def test_batched_and_unbatched_apps_differ_only_in_batch_size(bench: ModuleType,
                                                              tmp_path: Path) -> None:
    b = bench.bench_config(tmp_path, 8123, 16, 2).serve
    u = bench.bench_config(tmp_path, 8123, 1, 2).serve
    assert b.port == u.port == 8123
    for name in ("encoder", "retriever", "llm"):
        assert getattr(b, name).max_batch_size == 16 and getattr(u, name).max_batch_size == 1
    for name in ("ingress", "encoder", "retriever", "llm"):
        db, du = getattr(b, name), getattr(u, name)
        assert db.min_replicas == db.max_replicas == du.min_replicas == du.max_replicas
        assert db.max_ongoing_requests == du.max_ongoing_requests >= db.max_batch_size
    assert b.llm.max_replicas == 2 and b.ingress.max_replicas == 1
    assert bench.auth_headers({"ECGLM_SERVE_TOKEN": "t"})["Authorization"] == "Bearer t"
    assert "Authorization" not in bench.auth_headers({})


@pytest.fixture
def flaky_server() -> Iterator[tuple[str, dict]]:
    """A local HTTP server whose first ``state['fail']`` POSTs answer 503, then 200 with a
    ``generated`` field."""
    state = {"fail": 5, "seen": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                state["seen"] += 1
                fail = state["seen"] <= state["fail"]
            body = json.dumps({"error": "busy"} if fail else {"generated": "yes"}).encode()
            self.send_response(503 if fail else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/answer", state
    finally:
        server.shutdown()
        server.server_close()


def test_closed_loop_counts_503s_without_retries(load: ModuleType,
                                                  flaky_server: tuple[str, dict]) -> None:
    url, state = flaky_server
    outs, wall = load.closed_loop("t", url, [b"{}"], 4, 40, {}, None, 10.0, 60.0,
                                  log=lambda _: None)
    s = load.summarize(outs, wall)
    assert s["sent"] == 40 == state["seen"] and s["errors_5xx"] == 5 and s["ok"] == 35
    assert s["attempts"] == 40


def test_closed_loop_retries_until_answered(load: ModuleType,
                                            flaky_server: tuple[str, dict]) -> None:
    url, state = flaky_server
    retry = load.RetryPolicy(attempts=10, backoff_s=0.001)
    outs, wall = load.closed_loop("t", url, [b"{}"], 4, 40, {}, retry, 10.0, 60.0,
                                  log=lambda _: None)
    s = load.summarize(outs, wall)
    assert s["sent"] == 40 and s["failed"] == 0 and s["attempts"] == 45 == state["seen"]


def test_tickets_hold_keeps_clients_going(load: ModuleType) -> None:
    hold = threading.Event()
    hold.set()
    t = load.Tickets(2, hold)
    assert all(t.take() for _ in range(5))
    hold.clear()
    assert not t.take()
    assert load.Tickets(1).take() and not load.Tickets(0).take()
