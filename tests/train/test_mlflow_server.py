"""mlflow/start_server.sh serves the sqlite store on 127.0.0.1; runs read back over HTTP."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from ecglm.config import ExperimentConfig, apply_overrides
from ecglm.config.paths import resolve_paths
from ecglm.tracking import mlflow_run

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_script_serves_the_embedded_store(repo_root: Path, tmp_path: Path) -> None:
    cfg = resolve_paths(apply_overrides(ExperimentConfig(), {"name": "srv"}), tmp_path)
    run_id = mlflow_run.start_run(cfg, "served")
    mlflow_run.log_metrics(cfg.tracking.tracking_uri, run_id, {"val_loss": 0.5}, step=3)
    mlflow_run.end_run(cfg.tracking.tracking_uri, run_id)

    port = _free_port()
    env = {**os.environ, "PORT": str(port),
           "MLFLOW_STORE": str(tmp_path / ".cache/mlflow/mlflow.db"),
           "MLFLOW_ARTIFACTS": str(tmp_path / ".cache/mlflow/artifacts")}
    proc = subprocess.Popen(["bash", str(repo_root / "mlflow/start_server.sh")], env=env,
                            cwd=repo_root, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        else:
            pytest.fail("MLflow server did not answer /health within 90 s")
        run = MlflowClient(url).get_run(run_id)
        assert run.data.metrics["val_loss"] == 0.5
        assert run.data.params["name"] == "srv"
        # bound to loopback only (checked with iproute2's ss where present)
        if shutil.which("ss") is None:
            return
        listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
        lines = [ln for ln in listening.splitlines() if f":{port} " in ln + " "]
        assert lines and all("127.0.0.1" in ln for ln in lines), lines
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
