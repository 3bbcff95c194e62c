"""The resource preflight's decision table (pure functions over resource dicts; no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecglm.config import ConfigError, ExperimentConfig, apply_overrides, load_config
from ecglm.recipes.eval_worker import eval_resources
from ecglm.train.resources import (ClusterView, Demand, NodeType, ResourcePlanError,
                                   check_eval_task, check_resources, decide, demand, describe,
                                   sweep_variants)
from ecglm.train.runner import CheckpointScore, RunnerSpec, ingest_options
from tests.helpers import REPO


def _view(*cpus: float, gpus: float = 0.0, **kw) -> ClusterView:
    return ClusterView(tuple({"CPU": c, **({"GPU": gpus} if gpus else {})} for c in cpus), **kw)


def _d(workers: int = 2, cpw: float = 1.0, data: float = 1.0, **kw) -> Demand:
    return Demand(workers, {"CPU": cpw}, data, **kw)


@pytest.mark.parametrize("demand_, view, fits", [
    # the reported hang: 2 x 1-CPU workers on a 2-CPU head leave Ray Data nothing
    (_d(), _view(2), False),
    (_d(cpw=0.5), _view(2), True),          # 1 CPU left for the ingest
    (_d(), _view(3), True),
    (_d(), _view(4), True),                 # the local default (train.ray_num_cpus=4)
    (_d(data=2), _view(3), False),
    (_d(data=1.5), _view(3.5), True),       # 1 + 0.5 CPU slots
    # a worker must fit on one node; the ingest needs a whole-CPU slot somewhere
    (_d(workers=1, cpw=4), _view(2, 2, 2), False),
    (_d(cpw=1.5), _view(2, 2), False),      # 0.5 + 0.5 left: no one-CPU slot
    (_d(cpw=1.5), _view(2, 2, 1), True),
    # placement strategies
    (_d(placement_strategy="STRICT_PACK"), _view(1.5, 1.5), False),  # 2 CPU on one node
    (_d(placement_strategy="STRICT_PACK"), _view(2, 1), True),
    (_d(placement_strategy="STRICT_SPREAD"), _view(4), False),
    (_d(placement_strategy="STRICT_SPREAD"), _view(2, 2), True),
    (_d(placement_strategy="SPREAD"), _view(2, 2), True),
    # concurrent trials: every trial's workers are reserved before any ingest runs
    (_d(trials=2, trial_cpus=0.1), _view(4), False),
    (_d(cpw=0.9, trials=2, trial_cpus=0.1), _view(4), False),  # 3.8 CPU held, 0.2 left
    (_d(trials=2, trial_cpus=0.1), _view(7), True),
    (_d(trials=1, trial_cpus=0.1), _view(4), True),
    # the evaluation task runs alone after training but must fit one node
    (_d(eval_task={"CPU": 3.0, "GPU": 0.0}), _view(2, 2, 2), False),
    (_d(eval_task={"CPU": 2.0, "GPU": 0.0}), _view(2, 2, 2), True),
])
def test_decision_table(demand_: Demand, view: ClusterView, fits: bool) -> None:
    assert decide(demand_, view).fits is fits


def test_gpu_workers_need_gpu_nodes() -> None:
    gpu = Demand(2, {"CPU": 1.0, "GPU": 1.0}, 1.0)
    assert not decide(gpu, _view(16)).fits
    assert not decide(gpu, _view(8, gpus=1)).fits
    assert decide(gpu, _view(8, gpus=2)).fits
    assert decide(gpu, _view(4, 4, gpus=1)).fits
    verdict = decide(gpu, _view(16))
    assert "fits on no node" in verdict.reason and "add GPU nodes" in verdict.fixes[-1]


def test_autoscaling_node_types_count_as_capacity() -> None:
    cpu4 = NodeType("cpu4", {"CPU": 4.0}, 0, 2)
    head_only = _view(2, autoscaling=True, node_types=(cpu4,))
    assert decide(_d(), head_only).fits  # a 4-CPU worker node can be added
    assert not decide(_d(workers=1, cpw=8), head_only).fits  # no node type is that large
    fixed = NodeType("cpu4", {"CPU": 4.0}, 1, 1)  # not autoscalable: its node is already up
    assert not decide(_d(), _view(2, autoscaling=False, node_types=(fixed,))).fits
    unlimited = NodeType("cpu2", {"CPU": 2.0}, 0, -1)
    assert decide(_d(workers=8, trials=2, trial_cpus=0.1),
                  _view(2, autoscaling=True, node_types=(unlimited,))).fits


def test_unknown_autoscaler_warns_instead_of_failing(capsys: pytest.CaptureFixture) -> None:
    cfg = _tiny()
    verdict = check_resources(cfg, view=_view(2, autoscaling=True))
    assert verdict is not None and not verdict.fits and not verdict.enforce
    err = capsys.readouterr().err
    assert "warning, the autoscaler may add nodes" in err
    assert "an autoscaler whose node types are unknown" in err


def _tiny(*overrides: str) -> ExperimentConfig:
    return load_config(REPO / "jobs/configs/tiny.yaml", list(overrides))


def test_refusal_names_numbers_and_keys() -> None:
    with pytest.raises(ResourcePlanError) as info:
        check_resources(_tiny(), view=_view(2))
    msg = str(info.value)
    assert isinstance(info.value, ConfigError)  # the CLI exits 2
    assert "2 Train worker(s) x {CPU: 1}" in msg and "= 3 CPU" in msg
    assert "2 CPU on 1 node(s)" in msg and "no autoscaler" in msg
    assert "Ray Data ingest needs 1 CPU" in msg and "wait forever" in msg
    assert "train.cpus_per_worker=0.5" in msg and "train.num_workers=1" in msg
    assert "train.resource_check=false" in msg
    # a local Ray instance also points at train.ray_num_cpus
    with pytest.raises(ResourcePlanError, match=r"train\.ray_num_cpus=3"):
        check_resources(_tiny(), view=_view(2, local=True))
    # the recommended settings do fit
    assert check_resources(_tiny("train.cpus_per_worker=0.5"), view=_view(2)).fits
    assert check_resources(_tiny("train.num_workers=1"), view=_view(2)).fits
    assert check_resources(_tiny("train.resource_check=false"), view=_view(1)) is None


def test_sweeps_are_checked_per_concurrent_trial_and_swept_value() -> None:
    sweep = _tiny("tune.max_concurrent_trials=2")
    with pytest.raises(ResourcePlanError) as info:
        check_resources(sweep, sweep=True, view=_view(4))
    assert "x 2 trials at once (tune.max_concurrent_trials)" in str(info.value)
    assert "tune.max_concurrent_trials=1" in str(info.value)
    assert check_resources(_tiny(), sweep=True, view=_view(4)).fits  # tiny: 1 trial at once
    swept = apply_overrides(_tiny(), {"tune.search_space": {"train.num_workers": [1, 3],
                                                             "lora.r": [2, 4]}})
    labels = [label for label, _ in sweep_variants(swept)]
    assert labels == ["train.num_workers=1", "train.num_workers=3"]
    with pytest.raises(ResourcePlanError, match=r"\(train\.num_workers=3\)"):
        check_resources(swept, sweep=True, view=_view(4))


def test_demand_from_config_and_eval_task() -> None:
    cfg = _tiny("train.use_gpu=true", "train.placement_strategy=SPREAD", "train.data_cpus=2")
    d = demand(cfg, eval_task={"num_cpus": 2.0, "num_gpus": 1.0})
    assert d.worker == {"CPU": 1.0, "GPU": 1.0} and d.data_cpus == 2.0
    assert d.placement_strategy == "SPREAD" and d.eval_task == {"CPU": 2.0, "GPU": 1.0}
    assert d.per_trial("CPU") == 4.0 and d.per_trial("GPU") == 2.0
    text = describe(d, _view(1), decide(d, _view(1)))
    assert "train.use_gpu" in text and "= 4 CPU, 2 GPU" in text


def test_data_cpus_key_is_validated_and_caps_ray_data() -> None:
    for bad in (0.5, 0, -1):
        with pytest.raises(ConfigError, match=r"train\.data_cpus.*>= 1"):
            apply_overrides(ExperimentConfig(), {"train.data_cpus": bad})
    cfg = apply_overrides(ExperimentConfig(), {"train.data_cpus": 3})
    spec = RunnerSpec.from_train(cfg.train, "n", CheckpointScore())
    assert spec.data_cpus == 3.0
    options = ingest_options(spec.data_cpus)
    assert options.resource_limits.cpu == 3.0 and options.preserve_order
    assert ingest_options().resource_limits.cpu == float("inf")


@pytest.mark.parametrize("config", sorted((REPO / "jobs/configs").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_preset_fits_its_own_local_ray(config: Path) -> None:
    """Each shipped preset, run locally without a cluster (``train.ray_num_cpus`` logical CPUs,
    GPU presets given the GPUs they ask for), passes its own preflight."""
    cfg = load_config(config)
    t = cfg.train
    gpus = float(t.num_workers) if t.use_gpu else 0.0
    view = _view(float(t.ray_num_cpus), gpus=gpus, local=True)
    assert check_resources(cfg, eval_task=eval_resources(cfg), view=view).fits


def test_eval_only_check() -> None:
    cfg = _tiny()
    assert check_eval_task(cfg, {"num_cpus": 2.0, "num_gpus": 0.0}, view=_view(2))
    with pytest.raises(ResourcePlanError, match=r"evaluation\.num_cpus"):
        check_eval_task(cfg, {"num_cpus": 1.0, "num_gpus": 1.0}, view=_view(8))
    assert check_eval_task(_tiny("train.resource_check=false"), {"num_cpus": 9.0},
                           view=_view(1))
