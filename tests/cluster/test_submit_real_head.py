"""``ecglm submit`` / ``ecglm jobs`` against a real ``ray start --head`` and a real MLflow server.

One head (4 CPUs) and one tracking server (sqlite store, proxied artifacts) for the module.
The CLI runs as a subprocess, as a user would run it. Jobs write everything under
``cluster.storage_root`` (a temp folder standing in for shared storage); the MLflow run is read
back over HTTP and its artifacts are downloaded through the server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.cluster_helpers import MlflowServer, RayHead, mlflow_server, ray_head
from tests.helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EXPERIMENT = "cluster-submit"


@dataclass(frozen=True)
class Cluster:
    head: RayHead
    mlflow: MlflowServer
    storage: Path
    tmp: Path


def ecglm(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the ``ecglm`` CLI of this checkout as a subprocess (stdout + stderr captured)."""
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'platform'}{os.pathsep}{REPO}"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "ecglm.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _job_id(out: str) -> str:
    line = next(ln for ln in out.splitlines() if "submitted" in ln and " job " in ln)
    return line.split(" job ")[1].split()[0]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    started = time.monotonic()
    with ray_head(num_cpus=4) as head, mlflow_server(tmp / "mlflow") as server:
        yield Cluster(head, server, tmp / "shared", tmp)
    print(f"\n[cluster module] head + server up and down: {time.monotonic() - started:.0f} s")


def _common(c: Cluster) -> list[str]:
    # a CI machine shared with other jobs can take over a minute to start the 2 Train
    # workers (Ray Train's default wait is 60 s); the env var reaches the job's processes
    return ["--address", c.head.dashboard_url, f"cluster.storage_root={c.storage}",
            f"tracking.tracking_uri={c.mlflow.url}", f"tracking.experiment={EXPERIMENT}",
            "cluster.env_vars={RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S: '300'}"]


@pytest.fixture(scope="module")
def train_job(cluster: Cluster) -> tuple[subprocess.CompletedProcess[str], str]:
    """``ecglm submit train --follow`` with a config file outside the repo (sent in the env)."""
    outside = cluster.tmp / "my_tiny.yaml"
    shutil.copy(REPO / "jobs/configs/tiny.yaml", outside)
    t0 = time.monotonic()
    res = ecglm("submit", "train", str(outside), "--follow", *_common(cluster),
                "train.max_steps=2", "train.eval_every=2", "tune.search_space={lora.r: [2]}")
    print(f"\n[train job] {time.monotonic() - t0:.0f} s")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return res, _job_id(res.stdout)


def _result_json(logs: str) -> dict:
    """The JSON ``ecglm train`` prints last."""
    start = logs.rindex("\n{") + 1
    end = logs.rindex("}") + 1
    return json.loads(logs[start:end])


def test_train_job_succeeds_and_streams_logs(cluster: Cluster, train_job) -> None:
    res, job_id = train_job
    assert job_id.startswith("ecglm-train-tiny-")
    assert f"ecglm jobs logs {job_id}" in res.stdout
    assert "[train]" in res.stdout                     # worker progress streamed
    assert f"job {job_id} SUCCEEDED" in res.stdout
    # the job imported the uploaded code, not the installed or the head's PYTHONPATH one
    code = next(ln for ln in res.stdout.splitlines() if ln.startswith("[ecglm] code:"))
    assert "_ray_pkg_" in code and "working_dir_files" in code, code
    status = ecglm("jobs", "status", job_id, "--address", cluster.head.dashboard_url)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout
    out = _result_json(res.stdout)
    # everything written went to the storage root, nothing into the job's temp copy
    assert Path(out["checkpoint"]).is_relative_to(cluster.storage)
    assert out["tracking_uri"] == cluster.mlflow.url
    assert list(cluster.storage.glob(".cache/shards/*"))


def test_mlflow_run_read_back_over_http(cluster: Cluster, train_job, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from ecglm.checkpoint import check_checkpoint

    res, _ = train_job
    run_id = _result_json(res.stdout)["mlflow_run_id"]
    client = MlflowClient(cluster.mlflow.url)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["name"] == "tiny" and run.data.params["train.max_steps"] == "2"
    assert "val_loss" in run.data.metrics
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == EXPERIMENT and exp.artifact_location.startswith("mlflow-artifacts:/")
    ckpt = Path(client.download_artifacts(run_id, "checkpoint", str(tmp_path)))
    check_checkpoint(ckpt)
    evald = Path(client.download_artifacts(run_id, "eval", str(tmp_path)))
    assert any(evald.iterdir())
    # the artifacts live in the server's destination, not on the job's node
    assert list(cluster.mlflow.artifacts.rglob("trainable.safetensors"))


def test_tune_job_succeeds(cluster: Cluster, train_job) -> None:
    t0 = time.monotonic()
    res = ecglm("submit", "tune", "jobs/configs/tiny.yaml", "--follow", *_common(cluster),
                "train.max_steps=2", "train.eval_every=2", "tune.search_space={lora.r: [2]}")
    print(f"\n[tune job] {time.monotonic() - t0:.0f} s")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    job_id = _job_id(res.stdout)
    assert job_id.startswith("ecglm-tune-tiny-") and f"job {job_id} SUCCEEDED" in res.stdout
    assert '"best"' in res.stdout and '"metric": "val/em/overall"' in res.stdout


def test_failing_job_exits_nonzero_with_its_error(cluster: Cluster, train_job) -> None:
    missing = cluster.tmp / "no-such-llm"
    res = ecglm("submit", "train", "jobs/configs/tiny.yaml", *_common(cluster),
                "llm.source=path", f"llm.path={missing}", "--no-eval")
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    job_id = _job_id(res.stdout)
    assert f"job {job_id} FAILED" in res.stderr
    assert str(missing) in res.stderr                  # the job's own error, shown here
    assert f"llm.path: folder {missing} not found" in res.stderr
    logs = ecglm("jobs", "logs", job_id, "--address", cluster.head.dashboard_url)
    assert logs.returncode == 0 and str(missing) in logs.stdout
    # --follow on an ended job replays its log and exits with its status
    followed = ecglm("jobs", "logs", job_id, "--follow", "--address", cluster.head.dashboard_url)
    assert followed.returncode == 1 and str(missing) in followed.stdout
    status = ecglm("jobs", "status", job_id, "--address", cluster.head.dashboard_url)
    assert "FAILED" in status.stdout


def test_bad_override_fails_locally_and_submits_nothing(cluster: Cluster) -> None:
    before = ecglm("jobs", "list", "--address", cluster.head.dashboard_url)
    assert before.returncode == 0
    res = ecglm("submit", "train", "jobs/configs/tiny.yaml", *_common(cluster),
                "train.max_stepz=2")
    assert res.returncode == 2 and "train.max_stepz" in res.stderr
    after = ecglm("jobs", "list", "--address", cluster.head.dashboard_url)
    assert after.stdout == before.stdout


def test_relative_paths_without_storage_root_refused(cluster: Cluster) -> None:
    res = ecglm("submit", "train", "jobs/configs/tiny.yaml", "--address",
                cluster.head.dashboard_url, f"tracking.tracking_uri={cluster.mlflow.url}")
    assert res.returncode == 2
    assert "cluster.storage_root" in res.stderr and "output_dir" in res.stderr


def test_jobs_list_shows_the_jobs(cluster: Cluster, train_job) -> None:
    _, job_id = train_job
    res = ecglm("jobs", "list", "--address", cluster.head.dashboard_url)
    assert res.returncode == 0
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith(job_id))
    assert "SUCCEEDED" in line and "jobs/train.py" in line
    followed = ecglm("jobs", "logs", job_id, "--follow", "--address", cluster.head.dashboard_url)
    assert followed.returncode == 0 and "[train] step 2/2" in followed.stdout
    missing = ecglm("jobs", "status", "ecglm-nope", "--address", cluster.head.dashboard_url)
    assert missing.returncode == 2 and "ecglm-nope" in missing.stderr
