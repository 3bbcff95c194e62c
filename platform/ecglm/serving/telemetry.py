"""Request ids and Serve metrics of the ecglm application.

Metrics (exported by Ray's metrics agent, Prometheus names prefixed ``ray_``):

* ``ecglm_stage_ms`` histogram, tags ``route``, ``stage`` (``validate`` = parsing and
  preprocessing, ``encode``, ``retrieve``, ``generate``, ``total``), milliseconds.
* ``ecglm_requests`` counter, tags ``route``, ``status`` (HTTP status code).
"""

from __future__ import annotations

import uuid
from typing import Mapping

from ray import serve

STAGE_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000]


def request_id() -> str:
    """The id Serve's proxy gave the current HTTP request (the client's ``X-Request-ID`` when it
    sent one; Serve also returns it as the ``X-Request-ID`` response header and puts it in
    every replica log line); a fresh uuid outside a request."""
    # Serve exposes the id through its request context only; reading it is read-only
    context = serve.context._get_serve_request_context()
    return context.request_id or uuid.uuid4().hex


class ServeMetrics:
    """The application's metrics, created once per ingress replica."""

    def __init__(self) -> None:
        self.stage_ms = serve.metrics.Histogram(
            "ecglm_stage_ms", description="Time per request stage, ms",
            boundaries=STAGE_BOUNDARIES_MS, tag_keys=("route", "stage"))
        self.requests = serve.metrics.Counter(
            "ecglm_requests", description="Requests by route and HTTP status",
            tag_keys=("route", "status"))

    def observe(self, route: str, status: int, timings_ms: Mapping[str, float]) -> None:
        """Record one finished request: its status and each stage's milliseconds."""
        self.requests.inc(tags={"route": route, "status": str(status)})
        for stage, ms in timings_ms.items():
            self.stage_ms.observe(float(ms), tags={"route": route, "stage": stage})
