"""Start and stop the ecglm Serve application from Python (``ecglm serve``, the demo, tests)."""

from __future__ import annotations

import time
from pathlib import Path

import requests
from ray import serve

from ecglm.config import ExperimentConfig
from ecglm.serving.app import build_application
from ecglm.utils.ray_env import init_ray

APP_NAME = "ecglm"
HEALTH_PATH = "healthz"


class ServeStartError(RuntimeError):
    """The application did not become healthy in time."""


def base_url(cfg: ExperimentConfig) -> str:
    """Client URL of the application, ending in ``/`` (``0.0.0.0``/``::`` -> loopback)."""
    host = cfg.serve.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    prefix = "/" + cfg.serve.route_prefix.strip("/")
    return f"http://{host}:{cfg.serve.port}{prefix.rstrip('/')}/"


def wait_until_healthy(url: str, timeout_s: float, poll_s: float = 0.2) -> float:
    """Poll ``GET <url>healthz`` until it answers 200; returns the seconds waited.

    Raises:
        ServeStartError: no 200 within ``timeout_s``.
    """
    t0 = time.perf_counter()
    last = "no answer"
    session = requests.Session()
    session.trust_env = False  # a loopback URL must not go through HTTP(S)_PROXY
    while time.perf_counter() - t0 < timeout_s:
        try:
            resp = session.get(url + HEALTH_PATH, timeout=5)
            if resp.status_code == 200:
                return time.perf_counter() - t0
            last = f"HTTP {resp.status_code}: {resp.text[:200]}"
        except requests.RequestException as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(poll_s)
    raise ServeStartError(f"{url}{HEALTH_PATH}: not healthy after {timeout_s:.0f} s ({last})")


def start(cfg: ExperimentConfig, checkpoint_dir: Path, retrieval_dir: Path,
          timeout_s: float = 300.0) -> str:
    """Deploy the application on ``serve.host:serve.port`` and wait until it is healthy.

    Starts (or joins) Ray with ``train.ray_num_cpus`` logical CPUs. Serve's HTTP options are
    fixed when Serve first starts on a cluster: call :func:`stop` before starting again on
    another port.

    Args:
        cfg: experiment config with absolute paths (as :func:`ecglm.train.run.prepare` returns).
        checkpoint_dir: folder holding ``trainable.safetensors``.
        retrieval_dir: retrieval artifact folder (``index.faiss``, ``reports.json``, ...).
        timeout_s: seconds to wait for ``GET /healthz`` to answer 200.

    Returns:
        The application URL, e.g. ``http://127.0.0.1:8000/`` (``POST v1/answer`` etc.; ``POST``
        to the URL itself reaches the main model's route).
    """
    init_ray(cfg.train.ray_num_cpus)
    app = build_application(cfg, checkpoint_dir, retrieval_dir)
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    serve.run(app, name=APP_NAME, route_prefix=cfg.serve.route_prefix, blocking=False)
    url = base_url(cfg)
    wait_until_healthy(url, timeout_s)
    return url


def stop() -> None:
    """Shut Serve down (all applications, proxies and the controller); Ray keeps running."""
    serve.shutdown()
