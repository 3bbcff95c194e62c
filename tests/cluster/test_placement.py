"""Config checks of ``ecglm submit`` (no Ray): storage-root placement, inputs, warnings, the
job's runtime env and entrypoint."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from ecglm.cluster.jobs import DEFAULT_ADDRESS, resolve_address
from ecglm.cluster.placement import place_for_cluster
from ecglm.cluster.runtime import (
    CONFIG_ENV,
    CONFIG_FROM_ENV,
    config_argument,
    entrypoint,
    find_repo,
    runtime_env,
)
from ecglm.cluster.submit import parse_job_options
from ecglm.config import ConfigError, load_config
from tests.helpers import REPO

TINY = REPO / "jobs/configs/tiny.yaml"


def _ov(placement) -> dict[str, str]:
    return dict(item.split("=", 1) for item in placement.overrides)


def test_relative_written_paths_go_under_the_storage_root(tmp_path: Path) -> None:
    cfg = load_config(TINY, ["cluster.storage_root=/mnt/shared/ecglm"])
    ov = _ov(place_for_cluster(cfg, tmp_path, remote=True))
    assert ov["output_dir"] == "/mnt/shared/ecglm/runs"
    assert ov["data.shard_dir"] == "/mnt/shared/ecglm/.cache/shards"
    assert ov["data.synthetic_root"] == "/mnt/shared/ecglm/.cache/synthetic"
    assert ov["llm.cache_dir"] == "/mnt/shared/ecglm/.cache/models"
    assert ov["train.storage_path"] == "/mnt/shared/ecglm/.cache/ray_results"
    assert ov["tracking.tracking_uri"] == "sqlite:////mnt/shared/ecglm/.cache/mlflow/mlflow.db"
    # the placed overrides load (what the job will do)
    placed = load_config(TINY, [*(f"{k}={v}" for k, v in ov.items())])
    assert placed.output_dir == "/mnt/shared/ecglm/runs"


def test_absolute_paths_and_uris_are_kept(tmp_path: Path) -> None:
    cfg = load_config(TINY, [f"output_dir={tmp_path}/o", f"data.shard_dir={tmp_path}/s",
                             f"data.synthetic_root={tmp_path}/y", f"llm.cache_dir={tmp_path}/m",
                             "train.storage_path=s3://b/ray", "tracking.artifact_root=s3://b/a",
                             "tracking.tracking_uri=http://10.0.0.5:5000"])
    placement = place_for_cluster(cfg, tmp_path, remote=True)
    ov = _ov(placement)
    assert not {"output_dir", "data.shard_dir", "train.storage_path",
                "tracking.tracking_uri"} & set(ov)
    assert placement.warnings and "data.shared_root" in placement.warnings[0]


def test_relative_written_paths_without_storage_root_name_the_keys(tmp_path: Path) -> None:
    cfg = load_config(TINY, [f"output_dir={tmp_path}/o"])
    with pytest.raises(ConfigError) as err:
        place_for_cluster(cfg, tmp_path, remote=False)
    msg = str(err.value)
    for key in ("data.shard_dir", "llm.cache_dir", "train.storage_path",
                "tracking.tracking_uri", "cluster.storage_root"):
        assert key in msg
    assert not msg.startswith("output_dir")  # absolute: not named


def test_bad_storage_roots_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cluster.storage_root"):
        place_for_cluster(load_config(TINY, ["cluster.storage_root=shared"]), tmp_path, False)
    # a URI root serves the URI keys only
    with pytest.raises(ConfigError, match="output_dir"):
        place_for_cluster(load_config(TINY, ["cluster.storage_root=s3://bucket/x"]),
                          tmp_path, False)
    with pytest.raises(ConfigError, match="climbs out"):
        place_for_cluster(load_config(TINY, ["cluster.storage_root=/mnt/s", "output_dir=../x"]),
                          tmp_path, False)


def test_uri_storage_root_for_uri_keys(tmp_path: Path) -> None:
    cfg = load_config(TINY, ["cluster.storage_root=s3://bucket/ecglm", f"output_dir={tmp_path}",
                             f"data.shard_dir={tmp_path}/s", f"data.synthetic_root={tmp_path}/y",
                             f"llm.cache_dir={tmp_path}/m",
                             "tracking.tracking_uri=http://10.0.0.5:5000"])
    ov = _ov(place_for_cluster(cfg, tmp_path, remote=True))
    assert ov["train.storage_path"] == "s3://bucket/ecglm/.cache/ray_results"
    assert ov["tracking.artifact_root"] == "s3://bucket/ecglm/.cache/mlflow/artifacts"


def test_inputs_resolved_against_cwd_and_loopback_tracking_warned(tmp_path: Path) -> None:
    (tmp_path / "models/llm").mkdir(parents=True)
    cfg = load_config(TINY, ["cluster.storage_root=/mnt/s", "llm.source=path",
                             "llm.path=models/llm", "tracking.tracking_uri=http://127.0.0.1:5000"])
    remote = place_for_cluster(cfg, tmp_path, remote=True)
    ov = _ov(remote)
    assert ov["llm.path"] == str(tmp_path / "models/llm")
    assert ov["data.shared_root"] == str((tmp_path / "../shared/data").resolve())
    assert any("every node" in w and "llm.path" in w for w in remote.warnings)
    assert any("tracking.tracking_uri" in w for w in remote.warnings)
    local = place_for_cluster(cfg, tmp_path, remote=False)
    assert local.warnings == [] and _ov(local) == ov
    # a hub id (no such folder here) is kept as given
    hub = load_config(TINY, ["cluster.storage_root=/mnt/s", "llm.source=path",
                             "llm.path=HuggingFaceTB/SmolLM2-135M"])
    assert "llm.path" not in _ov(place_for_cluster(hub, tmp_path, remote=True))


def test_config_sent_by_path_or_in_the_env(tmp_path: Path) -> None:
    cfg = load_config(TINY)
    arg, env = config_argument(TINY, REPO, cfg.cluster.excludes)
    assert arg == "jobs/configs/tiny.yaml" and env == {}
    outside = tmp_path / "mine.yaml"
    outside.write_text(TINY.read_text())
    arg, env = config_argument(outside, REPO, cfg.cluster.excludes)
    assert arg == CONFIG_FROM_ENV and env[CONFIG_ENV] == TINY.read_text()
    # a config in an excluded folder of the repo is not uploaded: sent in the env too
    repo = tmp_path / "repo"
    (repo / ".cache").mkdir(parents=True)
    (repo / ".cache" / "x.yaml").write_text("name: x\n")
    (repo / "configs").mkdir()
    (repo / "configs" / "y.yaml").write_text("name: y\n")
    assert config_argument(repo / ".cache" / "x.yaml", repo, cfg.cluster.excludes)[0] \
        == CONFIG_FROM_ENV
    assert config_argument(repo / "configs" / "y.yaml", repo, cfg.cluster.excludes)[0] \
        == "configs/y.yaml"


def test_runtime_env_and_entrypoint() -> None:
    cfg = load_config(TINY, ["cluster.hub_offline=false", "cluster.env_vars={A: 'b'}"])
    env = runtime_env(cfg, find_repo(), {})
    assert env["working_dir"] == str(REPO)
    assert ".venv" in env["excludes"] and "runs" in env["excludes"]
    ev = env["env_vars"]
    assert ev["HF_HUB_OFFLINE"] == "0" and ev["TRANSFORMERS_OFFLINE"] == "0"
    assert ev["PYTHONPATH"] == "platform" and ev["A"] == "b"
    assert runtime_env(load_config(TINY), REPO, {})["env_vars"]["HF_HUB_OFFLINE"] == "1"
    cmd = entrypoint("shard", "jobs/configs/tiny.yaml", ["output_dir=/a b"])
    assert shlex.split(cmd) == ["python", "jobs/shard.py", "jobs/configs/tiny.yaml",
                                "output_dir=/a b"]


def test_job_options_and_address(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_job_options("eval", "run123", None, False) == ["--checkpoint", "run123"]
    assert parse_job_options("train", None, "r1", True) == ["--resume", "r1", "--no-eval"]
    with pytest.raises(ValueError, match="--checkpoint"):
        parse_job_options("serve", None, None, False)
    with pytest.raises(ValueError):
        parse_job_options("tune", None, None, True)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address() == DEFAULT_ADDRESS
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:8265")
    assert resolve_address() == "http://10.0.0.1:8265"
    assert resolve_address(configured="http://h:1") == "http://h:1"
    assert resolve_address("http://cli:2", "http://h:1") == "http://cli:2"


def test_failed_job_message_is_cut_to_its_tail() -> None:
    from ray.job_submission import JobStatus

    from ecglm.cluster.jobs import Outcome

    msg = "Job entrypoint command failed with exit code 1, last available logs:\n" + "\n".join(
        f"line {i}" for i in range(100)) + "\nOSError: /nonexistent/llm"
    short = Outcome(JobStatus.FAILED, msg).short_message(lines=5)
    assert short.splitlines()[0].startswith("Job entrypoint command failed")
    assert short.splitlines()[-1] == "OSError: /nonexistent/llm"
    assert "line 10\n" not in short and len(short.splitlines()) == 7
    assert Outcome(JobStatus.FAILED, "one\ntwo").short_message() == "one\ntwo"
    assert Outcome(JobStatus.FAILED, "x").code == 1 and Outcome(JobStatus.SUCCEEDED, "").code == 0
