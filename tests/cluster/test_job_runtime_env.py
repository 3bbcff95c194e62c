"""The driver's runtime env inside a submitted job (no Ray started)."""

from __future__ import annotations

import json

import pytest

from ecglm.utils.ray_env import JOB_CONFIG_ENV, joined_runtime_env, runtime_env


def test_keys_the_job_sets_are_left_to_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # from cluster.hub_offline: false
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv(JOB_CONFIG_ENV, raising=False)
    assert runtime_env()["env_vars"]["HF_HUB_OFFLINE"] == "0"
    job = {"runtime_env": {"working_dir": "gcs://x.zip", "env_vars": {"HF_HUB_OFFLINE": "0"}}}
    monkeypatch.setenv(JOB_CONFIG_ENV, json.dumps(job))
    env = runtime_env()["env_vars"]
    assert "HF_HUB_OFFLINE" not in env  # Ray refuses a driver env repeating a job key
    assert env["OMP_NUM_THREADS"] == "1"


def test_joined_workers_get_the_cluster_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(JOB_CONFIG_ENV, raising=False)
    assert joined_runtime_env("10.0.0.2:6379")["env_vars"]["RAY_ADDRESS"] == "10.0.0.2:6379"
    assert "RAY_ADDRESS" not in joined_runtime_env("ray://10.0.0.2:10001")["env_vars"]
    monkeypatch.setenv(JOB_CONFIG_ENV, json.dumps(
        {"runtime_env": {"env_vars": {"RAY_ADDRESS": "10.0.0.2:6379"}}}))
    assert "RAY_ADDRESS" not in joined_runtime_env("10.0.0.2:6379")["env_vars"]
