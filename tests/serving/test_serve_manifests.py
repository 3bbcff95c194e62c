"""``serve/serve_config.yaml`` and the KubeRay ``serve/rayservice.yaml`` describe the same
application: same builder, config, registered model and overrides (Kubernetes only adds its
tracking server and bind address); both sets of overrides load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ecglm.config import load_config
from ecglm.config.schema import SERVE_TOKEN_ENV
from ecglm.serving.launch import APP_NAME

REPO = Path(__file__).resolve().parents[2]
K8S_ONLY_OVERRIDES = ("tracking.tracking_uri", "serve.host")
"""Override keys only the Kubernetes manifest sets (cluster service names, pod networking)."""


def _load() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    local = yaml.safe_load((REPO / "serve/serve_config.yaml").read_text())
    service = yaml.safe_load((REPO / "serve/rayservice.yaml").read_text())
    k8s = yaml.safe_load(service["spec"]["serveConfigV2"])
    return local, service, k8s


def _app(config: dict[str, Any]) -> dict[str, Any]:
    apps = config["applications"]
    assert len(apps) == 1 and apps[0]["name"] == APP_NAME
    return apps[0]


def test_rayservice_runs_the_serve_config_application() -> None:
    local, service, k8s = _load()
    assert service["kind"] == "RayService" and service["apiVersion"] == "ray.io/v1"
    a, b = _app(local), _app(k8s)
    for key in ("route_prefix", "import_path"):
        assert a[key] == b[key], key
    for key in ("config", "checkpoint"):
        assert a["args"][key] == b["args"][key], key
    assert a["args"]["checkpoint"].startswith("models:/") and a["args"]["checkpoint"].endswith(
        "@champion")
    local_ov, k8s_ov = a["args"]["overrides"], b["args"]["overrides"]
    assert [o for o in k8s_ov if not o.startswith(K8S_ONLY_OVERRIDES)] == local_ov
    assert local["http_options"]["host"] == "127.0.0.1"  # loopback unless configured
    assert local["http_options"]["port"] == k8s["http_options"]["port"]
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    env = {e["name"]: e for e in head["containers"][0]["env"]}
    assert "secretKeyRef" in env[SERVE_TOKEN_ENV]["valueFrom"]  # the token comes from a Secret


def test_both_manifests_load_as_experiment_configs() -> None:
    local, _, k8s = _load()
    for manifest in (local, k8s):
        args = _app(manifest)["args"]
        cfg = load_config(REPO / args["config"], args["overrides"])
        assert cfg.serve.llm.max_replicas >= cfg.serve.llm.min_replicas
