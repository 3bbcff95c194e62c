"""Multi-node on one machine: per-process DeepSpeed accelerator, storage paths and URIs, and a
real tiny ``ecglm train`` on a three-node ``ray.cluster_utils.Cluster`` (head without CPUs, two
worker nodes) whose Train workers land on different nodes, whose checkpoints go to a shared
``file://`` storage URI, and whose driver runs from an unrelated working directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import pytest

from ecglm.config import ConfigError, ExperimentConfig, apply_overrides
from ecglm.config.paths import resolve_paths
from ecglm.utils.ray_env import DS_ACCELERATOR, choose_ds_accelerator, runtime_env, set_process_env


@pytest.mark.parametrize("cuda, gpu_ids, current, expected", [
    (False, None, None, "cpu"),          # CPU driver or script
    (True, None, None, "cuda"),          # GPU driver or script
    (True, ["0"], "cpu", "cuda"),        # GPU Train worker; a CPU head's choice is not inherited
    (True, [], None, "cpu"),             # CPU-only Ray worker on a GPU node
    (False, ["0"], "cuda", "cpu"),       # a stale "cuda" without a usable device
    (True, ["0"], "xpu", "xpu"),         # another accelerator chosen explicitly is kept
    (False, None, "npu", "npu"),
])
def test_ds_accelerator_follows_the_process_own_resources(
        cuda: bool, gpu_ids: Optional[Sequence[str]], current: Optional[str],
        expected: str) -> None:
    assert choose_ds_accelerator(cuda, gpu_ids, current) == expected


def test_set_process_env_replaces_an_inherited_accelerator(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    import torch

    own = "cuda" if torch.cuda.is_available() else "cpu"
    other = "cpu" if own == "cuda" else "cuda"
    monkeypatch.setenv(DS_ACCELERATOR, other)  # e.g. inherited from a driver on another node
    assert set_process_env() == own and os.environ[DS_ACCELERATOR] == own
    monkeypatch.setenv(DS_ACCELERATOR, "hpu")
    assert set_process_env() == "hpu"


def test_runtime_env_never_carries_the_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DS_ACCELERATOR, "cpu")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    env = runtime_env()
    assert DS_ACCELERATOR not in env["env_vars"]
    assert env["env_vars"]["OMP_NUM_THREADS"] == "1"


def test_storage_uris_are_kept_and_folders_made_absolute(tmp_path: Path) -> None:
    (tmp_path / "runs" / "old").mkdir(parents=True)
    base = apply_overrides(ExperimentConfig(), {
        "evaluation.transfer_root": "cinc", "train.resume_from": "runs/old",
        "tracking.tracking_uri": "mlruns/store"})
    cfg = resolve_paths(base, tmp_path)
    assert cfg.train.storage_path == str(tmp_path / ".cache" / "ray_results")
    assert cfg.evaluation.transfer_root == str(tmp_path / "cinc")
    assert cfg.train.resume_from == str(tmp_path / "runs" / "old")
    assert cfg.tracking.tracking_uri == str(tmp_path / "mlruns" / "store")
    for uri in ("file:///mnt/shared/ray", "s3://bucket/ray", "gs://bucket/prefix/ray"):
        got = resolve_paths(apply_overrides(base, {"train.storage_path": uri,
                                                   "tracking.artifact_root": uri}), tmp_path)
        assert got.train.storage_path == uri and got.tracking.artifact_root == uri
    run_id = apply_overrides(base, {"train.resume_from": "0123abcd"})
    assert resolve_paths(run_id, tmp_path).train.resume_from == "0123abcd"  # an MLflow run id
    assert resolve_paths(cfg, tmp_path / "elsewhere") == cfg  # idempotent


@pytest.mark.parametrize("key", ["output_dir", "data.shard_dir", "llm.cache_dir"])
def test_a_uri_where_a_local_folder_is_needed_names_the_key(key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        resolve_paths(apply_overrides(ExperimentConfig(), {key: "s3://bucket/x"}), tmp_path)


def test_relative_outputs_inside_a_ray_job_copy_are_refused(tmp_path: Path) -> None:
    """``ray job submit --working-dir .`` runs the driver in a garbage-collected copy: a
    relative output folder there would vanish with the job (and other nodes never see it)."""
    job_dir = tmp_path / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_ab"
    with pytest.raises(ConfigError, match=r"output_dir.*train\.storage_path") as exc:
        resolve_paths(ExperimentConfig(), job_dir)
    assert "tracking.tracking_uri" in str(exc.value) and str(job_dir) in str(exc.value)
    shared = tmp_path / "shared"
    absolute = apply_overrides(ExperimentConfig(), {
        "output_dir": f"{shared}/runs", "data.synthetic_root": f"{shared}/syn",
        "data.shard_dir": f"{shared}/shards", "llm.cache_dir": f"{shared}/models",
        "tracking.artifact_root": "s3://bucket/artifacts",
        "train.storage_path": "s3://bucket/ray", "tracking.tracking_uri": "http://head:5000"})
    got = resolve_paths(absolute, job_dir)  # inputs relative to the job's files stay allowed
    assert got.train.storage_path == "s3://bucket/ray"
    assert Path(got.data.shared_root).is_absolute()


def test_placement_strategy_reaches_the_runner_spec() -> None:
    from ecglm.train.runner import CheckpointScore, RunnerSpec

    cfg = apply_overrides(ExperimentConfig(), {"train.placement_strategy": "STRICT_SPREAD"})
    spec = RunnerSpec.from_train(cfg.train, "n", CheckpointScore())
    assert spec.placement_strategy == "STRICT_SPREAD"
    assert RunnerSpec.from_train(ExperimentConfig().train, "n",
                                 CheckpointScore()).placement_strategy == "PACK"
    with pytest.raises(ConfigError, match=r"train\.placement_strategy"):
        apply_overrides(ExperimentConfig(), {"train.placement_strategy": "RANDOM"})


def _worker_accelerator() -> dict[str, Any]:
    """In a Ray task: the job's runtime env vars, then what the worker chooses and what
    DeepSpeed (imported afterwards, as the strategies do) runs on."""
    import ray

    job_env = dict(ray.get_runtime_context().runtime_env.get("env_vars", {}))
    chosen = set_process_env()
    from deepspeed.accelerator import get_accelerator  # after set_process_env, as in workers

    return {"job_env": job_env, "chosen": chosen, "deepspeed": get_accelerator().device_name()}


@pytest.mark.slow
def test_ray_worker_chooses_its_own_deepspeed_accelerator(ray_session) -> None:
    got = ray_session.get(ray_session.remote(num_cpus=1)(_worker_accelerator).remote())
    assert DS_ACCELERATOR not in got["job_env"] and "OMP_NUM_THREADS" in got["job_env"]
    # a task Ray gave no GPU runs DeepSpeed on the CPU, even on a GPU machine
    assert got["chosen"] == "cpu" and got["deepspeed"] == "cpu"


# --------------------------------------------------------------------------------------------
# two worker nodes on one machine
# --------------------------------------------------------------------------------------------

@pytest.fixture()
def two_nodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A ``Cluster``: a head with no CPU (nothing but the driver's controller can go there)
    and two worker nodes of 2 CPUs (one Train worker + Ray Data each), joined through
    ``RAY_ADDRESS`` as on a real cluster. A session Ray running before is stopped and
    restarted afterwards (4 CPUs, as ``ray_session`` starts it)."""
    import ray
    from ray.cluster_utils import Cluster

    from ecglm.utils.ray_env import init_ray

    was_running = ray.is_initialized()
    if was_running:
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": 200 << 20, "include_dashboard": False})
    try:
        node_a = cluster.add_node(num_cpus=2, resources={"node_a": 1},
                                  object_store_memory=200 << 20)
        node_b = cluster.add_node(num_cpus=2, resources={"node_b": 1},
                                  object_store_memory=200 << 20)
        cluster.wait_for_nodes()
        monkeypatch.setenv("RAY_ADDRESS", cluster.address)
        yield {"cluster": cluster, "head": cluster.head_node.node_id,
               "workers": {node_a.node_id, node_b.node_id}}
    finally:
        ray.shutdown()
        cluster.shutdown()
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        if was_running:
            init_ray(num_cpus=4, object_store_bytes=1 << 30)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_node_training_spreads_workers_and_shares_storage(
        two_nodes: dict[str, Any], tiny_root: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from ecglm.recipes import train
    from ecglm.utils.ray_env import init_ray
    from tests.helpers import tiny_config

    shared = tmp_path / "shared"
    cwd = tmp_path / "unrelated_cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    cfg = tiny_config(tiny_root, "name=multinode", "train.max_steps=1", "train.eval_every=0",
                      "train.placement_strategy=STRICT_SPREAD", "evaluation.max_items=2",
                      f"train.storage_path={shared.as_uri()}", f"output_dir={tmp_path}/runs")
    init_ray(cfg.train.ray_num_cpus)  # joins the cluster named by RAY_ADDRESS
    assert {n["NodeID"] for n in ray.nodes() if n["Alive"]} == {two_nodes["head"],
                                                                *two_nodes["workers"]}
    assert DS_ACCELERATOR not in ray.get_runtime_context().runtime_env.get("env_vars", {})

    out = train.run(cfg)

    # one Train worker per worker node (Ray's actor table, written by the GCS)
    job = ray.get_runtime_context().get_job_id()
    actors = two_nodes["cluster"].global_state.actor_table(None)
    workers = [a for a in actors.values()
               if a["ActorClassName"].endswith("RayTrainWorker") and a["JobID"] == job]
    assert len(workers) == 2, workers
    assert {a["Address"]["NodeID"] for a in workers} == two_nodes["workers"]
    # evaluation ran in a Ray worker on a worker node, not in the driver (head node)
    ev = out["eval"]
    assert ev["worker"]["node_id"] in two_nodes["workers"]
    assert ev["worker"]["pid"] != os.getpid() and ev["worker"]["model_loaded"]
    assert 0.0 <= ev["metrics"]["em/overall"] <= 1.0
    # checkpoints on the shared storage URI, the kept copy and eval files under output_dir
    stored = sorted(shared.rglob("trainable.safetensors"))
    assert stored and all(f"multinode-{out['mlflow_run_id'][:8]}" in str(p) for p in stored)
    assert Path(out["checkpoint"]).is_relative_to(tmp_path / "runs")
    assert Path(ev["summary"]).exists()
    # nothing was written relative to the driver's working directory
    assert sorted(p.name for p in cwd.iterdir()) == []
