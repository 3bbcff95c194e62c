"""Closed-loop HTTP load generation and its statistics for ``jobs/bench/serve.py``: clients
(threads, one ``requests.Session`` each, the next request sent when the previous answered),
bounded retries, and per-phase summaries (latency percentiles in ms, requests/s). No Ray."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

RETRY_STATUSES = frozenset({502, 503, 504})
NO_RESPONSE = 0
"""``Outcome.status`` when no HTTP answer came (connection error, timeout)."""


# --------------------------------------------------------------------------------------------
# statistics (pure)
# --------------------------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float:
    """``q``-th percentile (0..100) with linear interpolation between order statistics
    (NumPy's default). Raises ValueError on no values."""
    if not values:
        raise ValueError("percentile of no values")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class Outcome:
    """One logical request (all its attempts)."""

    start_s: float
    """Send time of the first attempt, seconds after the phase started."""
    latency_ms: float
    """First send to final answer, milliseconds (retries and backoff included)."""
    status: int
    """HTTP status of the last attempt; :data:`NO_RESPONSE` when none came."""
    attempts: int = 1
    error: Optional[str] = None
    """Client-side error of the last attempt (exception name, or a bad 200 body)."""
    timings_ms: Optional[Mapping[str, float]] = None
    """The server's ``timings_ms`` of a 200 answer (stage -> milliseconds)."""

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


def mean_timings(outcomes: Sequence[Outcome]) -> Optional[dict[str, float]]:
    """Mean server ``timings_ms`` per stage over the 200 answers that carry them (ms)."""
    sums: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for o in outcomes:
        if o.ok and o.timings_ms:
            for stage, ms in o.timings_ms.items():
                sums[stage] += ms
                counts[stage] += 1
    return {k: round(sums[k] / counts[k], 2) for k in sums} or None


def summarize(outcomes: Sequence[Outcome], wall_s: float) -> dict[str, Any]:
    """Counts, failure fraction, status histogram, latency percentiles (ms, 200s only), mean
    server stage timings (ms) and requests/s (200 answers per wall second) of one phase."""
    ok = [o.latency_ms for o in outcomes if o.ok]
    n = len(outcomes)
    lat = None
    if ok:
        lat = {f"p{q}": round(percentile(ok, q), 2) for q in (50, 95, 99)}
        lat["mean"] = round(sum(ok) / len(ok), 2)
    return {
        "sent": n, "ok": len(ok), "non_200": sum(o.status != 200 for o in outcomes),
        "errors_5xx": sum(500 <= o.status < 600 for o in outcomes),
        "no_response": sum(o.status == NO_RESPONSE for o in outcomes),
        "failed": n - len(ok), "failed_fraction": round((n - len(ok)) / n, 6) if n else None,
        "attempts": sum(o.attempts for o in outcomes),
        "statuses": {str(k): v for k, v in sorted(Counter(o.status for o in outcomes).items())},
        "latency_ms": lat, "server_timings_ms_mean": mean_timings(outcomes),
        "wall_s": round(wall_s, 2),
        "requests_per_s": round(len(ok) / wall_s, 3) if wall_s > 0 else None,
    }


# --------------------------------------------------------------------------------------------
# closed-loop HTTP clients
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RetryPolicy:
    """Client retries: up to ``attempts`` tries of one request on a retryable answer."""

    attempts: int = 5
    backoff_s: float = 0.05
    """Wait before the second try, seconds; doubled per try, capped at ``max_backoff_s``."""
    max_backoff_s: float = 1.0
    statuses: frozenset[int] = RETRY_STATUSES

    def should_retry(self, status: int) -> bool:
        return status == NO_RESPONSE or status in self.statuses

    def delay_s(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        return min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)


class Tickets:
    """Thread-safe request budget: ``take()`` is True while fewer than ``n`` were taken or
    while ``hold`` is set."""

    def __init__(self, n: int, hold: Optional[threading.Event] = None) -> None:
        self.n = n
        self.hold = hold
        self.taken = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.taken < self.n or (self.hold is not None and self.hold.is_set()):
                self.taken += 1
                return True
            return False


def read_answer(content: bytes) -> tuple[Optional[str], Optional[dict[str, float]]]:
    """``(error, timings_ms)`` of a 200 body: error None when it is a JSON object with
    ``generated``; its ``timings_ms`` when present."""
    try:
        body = json.loads(content)
    except ValueError:
        return "200 body is not JSON", None
    if not isinstance(body, dict) or "generated" not in body:
        return "200 without 'generated'", None
    timings = body.get("timings_ms")
    return None, ({str(k): float(v) for k, v in timings.items()}
                  if isinstance(timings, dict) else None)


def send(session: Any, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float,
         retry: Optional[RetryPolicy], t0: float) -> Outcome:
    """POST ``body`` (JSON bytes) until a final answer; a 200 must carry ``generated``."""
    import requests

    start = time.perf_counter()
    attempts, status, error, timings = 0, NO_RESPONSE, None, None
    while True:
        attempts += 1
        try:
            resp = session.post(url, data=body, headers=headers, timeout=timeout_s)
        except requests.RequestException as exc:
            status, error = NO_RESPONSE, type(exc).__name__
        else:
            status = resp.status_code
            error, timings = read_answer(resp.content) if status == 200 else (None, None)
        if retry is None or attempts >= retry.attempts or not retry.should_retry(status):
            break
        time.sleep(retry.delay_s(attempts))
    end = time.perf_counter()
    return Outcome(round(start - t0, 4), (end - start) * 1000.0, status, attempts, error,
                   timings)


def log_line(message: str) -> None:
    """Print one progress line now (unbuffered)."""
    print(message, flush=True)


def _progress(label: str, done: int, n: int, bad: int, elapsed: float, open_end: bool) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = f"ETA {max(n - done, 0) / rate:.0f} s" if rate > 0 and not open_end else "ETA ?"
    return (f"[serve-bench] {label}: {done}/{n}{'+' if open_end else ''} requests, "
            f"{rate:.1f} req/s, non-200 {bad}, {elapsed:.0f} s, {eta}")


def closed_loop(label: str, url: str, bodies: Sequence[bytes], concurrency: int, n: int,
                headers: Mapping[str, str], retry: Optional[RetryPolicy] = None,
                timeout_s: float = 60.0, progress_s: float = 5.0,
                hold: Optional[threading.Event] = None,
                log: Callable[[str], None] = log_line) -> tuple[list[Outcome], float]:
    """``concurrency`` clients, each sending its next request when the previous answered,
    until ``n`` requests are sent (and ``hold`` is cleared). Returns the outcomes and the
    phase's wall seconds."""
    import requests

    tickets = Tickets(n, hold)
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    t0 = time.perf_counter()

    def client(i: int) -> None:
        with requests.Session() as session:
            session.trust_env = False  # a loopback URL must not go through a proxy
            k = i
            while tickets.take():
                out = send(session, url, bodies[k % len(bodies)], headers, timeout_s, retry, t0)
                with lock:
                    outcomes.append(out)
                k += concurrency

    threads = [threading.Thread(target=client, args=(i,), daemon=True)
               for i in range(concurrency)]
    for t in threads:
        t.start()
    last = t0
    while any(t.is_alive() for t in threads):
        time.sleep(0.1)
        now = time.perf_counter()
        if now - last >= progress_s:
            last = now
            with lock:
                done, bad = len(outcomes), sum(not o.ok for o in outcomes)
            log(_progress(label, done, n, bad, now - t0, hold is not None and hold.is_set()))
    for t in threads:
        t.join()
    return outcomes, time.perf_counter() - t0
