"""Real processes for the cluster tests: a ``ray start --head`` and an MLflow tracking server.

Both run as separate processes on free ports in their own temp folders, bind to 127.0.0.1, and
are stopped by their own process ids only (never ``ray stop``, which would also stop the test
session's local Ray and any other head on the machine).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import requests

from tests.helpers import REPO

BIN = Path(sys.executable).parent
"""The venv's bin folder: ``ray``, ``mlflow`` and ``ecglm`` of the interpreter running pytest."""


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held open together while chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_http(url: str, timeout_s: float, what: str,
              proc: Optional[subprocess.Popen] = None) -> None:
    """Poll ``url`` until it answers 200 or fail with ``what`` in the message (at once when
    ``proc``, the process that should answer, has exited)."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise TimeoutError(f"{what} exited with status {proc.returncode} before answering "
                               f"{url}")
        try:
            r = requests.get(url, timeout=3)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        time.sleep(0.5)
    raise TimeoutError(f"{what} did not answer {url} within {timeout_s:.0f} s ({last})")


def _kill_matching(marker: str) -> None:
    """SIGKILL every process of this user whose command line mentions ``marker``, and all
    their descendants (Ray's agents rename themselves, e.g. ``ray::DashboardAgent``, so only
    their parents carry the marker)."""
    import psutil

    me = os.getpid()
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["pid", "cmdline", "uids"]):
        try:
            if proc.info["pid"] == me or proc.info["uids"].real != os.getuid():
                continue
            if any(marker in part for part in proc.info["cmdline"] or ()):
                found[proc.pid] = proc
                for child in proc.children(recursive=True):
                    found[child.pid] = child
        except (psutil.NoSuchProcess, psutil.AccessDenied, TypeError):
            continue
    for proc in found.values():
        try:
            proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


@dataclass(frozen=True)
class RayHead:
    """A running ``ray start --head``."""

    gcs_address: str
    """``127.0.0.1:<port>`` (``ray.init(address=...)``)."""
    dashboard_url: str
    """``http://127.0.0.1:<port>``: the job server (``ecglm submit --address``)."""
    temp_dir: Path
    num_cpus: int


@contextmanager
def ray_head(num_cpus: int, object_store_mib: int = 400,
             env: Optional[dict[str, str]] = None) -> Iterator[RayHead]:
    """Start ``ray start --head --num-cpus N`` on free ports with its own ``--temp-dir``
    (short: Ray's socket paths must stay under 108 bytes); stop only its processes. The venv's
    ``bin`` leads ``PATH`` (as after ``source .venv/bin/activate``): a job's ``python`` and its
    workers use the venv."""
    temp = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))
    (gcs, dash, client, agent_grpc, agent_http, metrics, rtenv,
     node_mgr, obj_mgr) = free_ports(9)
    # as a user with the venv active: jobs' `python` is the venv's
    run_env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
               "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
    run_env.pop("RAY_ADDRESS", None)
    cmd = [str(BIN / "ray"), "start", "--head", f"--num-cpus={num_cpus}", "--num-gpus=0",
           f"--port={gcs}", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
           f"--dashboard-agent-grpc-port={agent_grpc}",
           f"--dashboard-agent-listen-port={agent_http}", f"--metrics-export-port={metrics}",
           f"--runtime-env-agent-port={rtenv}", f"--node-manager-port={node_mgr}",
           f"--object-manager-port={obj_mgr}",
           f"--object-store-memory={object_store_mib * 1024 * 1024}",
           f"--temp-dir={temp}", "--disable-usage-stats"]
    out = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=180)
    try:
        if out.returncode != 0:
            raise RuntimeError(f"ray start --head failed ({out.returncode}):\n"
                               f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        head = RayHead(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dash}", temp, num_cpus)
        wait_http(f"{head.dashboard_url}/api/version", 120, "Ray dashboard")
        yield head
    finally:
        _kill_matching(str(temp))
        time.sleep(1.0)
        _kill_matching(str(temp))


@dataclass(frozen=True)
class MlflowServer:
    """A running ``mlflow/start_server.sh``."""

    url: str
    store_uri: str
    artifacts: Path


@contextmanager
def mlflow_server(root: Path) -> Iterator[MlflowServer]:
    """``mlflow/start_server.sh`` on a free 127.0.0.1 port: sqlite store and proxied artifact
    destination under ``root``; stopped (its process group) afterwards."""
    (port,) = free_ports(1)
    root.mkdir(parents=True, exist_ok=True)
    store = root / "mlflow.db"
    artifacts = root / "artifacts"
    env = {**os.environ, "PORT": str(port), "BACKEND_STORE_URI": f"sqlite:///{store}",
           "ARTIFACTS_DESTINATION": str(artifacts),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # the venv's mlflow
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(["bash", str(REPO / "mlflow/start_server.sh")], env=env, cwd=REPO,
                            start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http(f"{url}/health", 120, "MLflow server", proc)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; log: {(root / 'server.log').read_text()[-3000:]}") \
                from None
        yield MlflowServer(url, f"sqlite:///{store}", artifacts)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
