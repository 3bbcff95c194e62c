"""Sweep building blocks without Ray running: the ranked metric per task, PBT/Optuna config
rules, choices through Tune, schedulers in optimizer steps, the PBT learning-rate change on a
restored schedule, and the MLflow experiment kind."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from ecglm.config import ConfigError, ExperimentConfig, apply_overrides
from ecglm.config.paths import resolve_paths
from ecglm.config.search_space import parse_search_space
from ecglm.tracking import mlflow_run
from ecglm.train.worker import set_base_lr, warmup_schedule
from ecglm.tuning.algorithms import make_scheduler, make_search, pbt_interval
from ecglm.tuning.choices import decode_choice, encode_choice, trial_overrides
from ecglm.tuning.space import tune_space
from ecglm.tuning.trial import trial_name
from ecglm.tuning.trial_metric import sweep_metric, validation_config


def _cfg(**over: object) -> ExperimentConfig:
    return apply_overrides(ExperimentConfig(), dict(over))


@pytest.mark.parametrize("task,name", [("qa", "val/em/overall"),
                                       ("classify", "val/model/macro_auc"),
                                       ("report", "val/model/rouge_l"),
                                       ("grounding", "val/model/rouge_l")])
def test_task_metric_is_the_default_and_is_maximised(task: str, name: str) -> None:
    m = sweep_metric(_cfg(task=task))
    assert (m.name, m.mode) == (name, "max") and m.eval_key == name[len("val/"):]


def test_loss_and_other_keys() -> None:
    m = sweep_metric(_cfg(**{"tune.metric": "val_loss"}))
    assert (m.name, m.eval_key, m.mode) == ("val_loss", None, "min")
    m = sweep_metric(_cfg(**{"tune.metric": "em/verify", "tune.mode": "max"}))
    assert (m.name, m.eval_key) == ("val/em/verify", "em/verify")
    with pytest.raises(ConfigError, match=r"^tune\.mode: required"):
        _cfg(**{"tune.metric": "model/hamming_loss"})


def test_validation_config_evaluates_the_valid_split_only() -> None:
    cfg = validation_config(_cfg(**{"tune.eval_max_items": 5, "evaluation.noise_snr_db": [10.0],
                                    "evaluation.classification": True}))
    ev = cfg.evaluation
    assert (ev.split, ev.max_items, ev.baselines, ev.report) == ("valid", 5, False, False)
    assert not ev.noise_snr_db and not ev.classification and ev.judge == "none"


def test_pbt_and_optuna_rules_name_the_key() -> None:
    space = {"train.lr": {"loguniform": [1e-4, 1e-2]}, "lora.r": [4, 8]}
    ok = _cfg(**{"tune.scheduler": "pbt", "tune.search": "random", "tune.search_space": space})
    assert ok.tune.pbt_mutations == ["train.lr"]
    with pytest.raises(ConfigError, match=r"^tune\.pbt_mutations\.lora\.r: must be one of"):
        _cfg(**{"tune.scheduler": "pbt", "tune.search": "random", "tune.search_space": space,
                "tune.pbt_mutations": ["lora.r"]})
    with pytest.raises(ConfigError, match=r"^tune\.pbt_mutations\.train\.lr: must also be"):
        _cfg(**{"tune.scheduler": "pbt", "tune.search_space": {"lora.r": [4, 8]}})
    with pytest.raises(ConfigError, match=r"^tune\.search: optuna cannot drive"):
        _cfg(**{"tune.scheduler": "pbt", "tune.search": "optuna", "tune.search_space": space})
    with pytest.raises(ConfigError, match=r"^tune\.search_space\.lora\.r: tune\.search=optuna"):
        _cfg(**{"tune.search": "optuna", "tune.search_space": {"lora.r": {"grid": [4, 8]}}})


def test_list_choices_travel_as_json_text() -> None:
    values = [["q_proj", "v_proj"], ["all-linear"]]
    dims = parse_search_space({"lora.target_modules": {"choice": values}}, "optuna")
    domain = tune_space(dims, "optuna")["lora.target_modules"]
    assert all(isinstance(c, str) for c in domain.categories)  # Optuna takes scalars only
    assert [decode_choice(c) for c in domain.categories] == values
    assert decode_choice(encode_choice(8)) == 8
    over = trial_overrides({"lora.target_modules": domain.categories[1], "lora.r": 8},
                           ("lora.target_modules", "lora.r"))
    assert over == {"lora.target_modules": ["all-linear"], "lora.r": 8}
    assert apply_overrides(ExperimentConfig(), over).lora.target_modules == ["all-linear"]
    assert trial_name({"lora.r": 8, "train.lr": 0.000312345}) == "trial-r=8-lr=0.0003123"


def test_schedulers_count_optimizer_steps() -> None:
    cfg = _cfg(**{"train.max_steps": 40, "train.eval_every": 10, "tune.grace_period": 2})
    dims = parse_search_space(cfg.tune.search_space, cfg.tune.search)
    asha = make_scheduler(cfg, dims)
    assert isinstance(asha, ASHAScheduler)
    assert asha._time_attr == "step" and asha._max_t == 41  # the last step ends on its own
    assert min(m for m, _ in asha._brackets[0]._rungs) == 20  # grace: 2 evaluations
    space = {"train.lr": {"loguniform": [1e-4, 1e-2]}}
    pbt_cfg = apply_overrides(cfg, {"tune.scheduler": "pbt", "tune.search": "random",
                                    "tune.search_space": space})
    pbt = make_scheduler(pbt_cfg, parse_search_space(space, "random"))
    assert isinstance(pbt, PopulationBasedTraining)
    assert pbt._perturbation_interval == 10 == pbt_interval(pbt_cfg)
    assert set(pbt._hyperparam_mutations) == {"train.lr"}
    variants = make_search(cfg, "val/em/overall", "max")
    assert isinstance(variants, BasicVariantGenerator) and variants.max_concurrent == 1
    optuna_cfg = apply_overrides(cfg, {"tune.search": "optuna", "tune.seed": 7})
    search = make_search(optuna_cfg, "val/em/overall", "max")
    assert isinstance(search, OptunaSearch) and search._seed == 7


def test_set_base_lr_keeps_the_schedule_position() -> None:
    """A schedule restored at step 5 with another peak rate continues exactly like a schedule
    built with that rate from the start."""
    def schedule(lr: float) -> tuple[torch.optim.Optimizer, object]:
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)
        return opt, warmup_schedule(opt, "cosine", 3, 20)

    opt_a, sched_a = schedule(1e-3)
    opt_b, sched_b = schedule(4e-3)
    for _ in range(5):
        for opt, sched in ((opt_a, sched_a), (opt_b, sched_b)):
            opt.step()
            sched.step()
    assert set_base_lr(sched_a, opt_a, 4e-3)
    assert not set_base_lr(sched_a, opt_a, 4e-3)  # already there
    for _ in range(3):
        assert math.isclose(opt_a.param_groups[0]["lr"], opt_b.param_groups[0]["lr"],
                            rel_tol=1e-12)
        assert math.isclose(sched_a.get_last_lr()[0], sched_b.get_last_lr()[0], rel_tol=1e-12)
        for opt, sched in ((opt_a, sched_a), (opt_b, sched_b)):
            opt.step()
            sched.step()


def test_experiments_open_on_runs(tmp_path: Path) -> None:
    cfg = resolve_paths(_cfg(name="kind"), tmp_path)
    exp_id = mlflow_run.ensure_experiment(cfg)
    client = MlflowClient(cfg.tracking.tracking_uri)
    tags = client.get_experiment(exp_id).tags
    assert tags[mlflow_run.EXPERIMENT_KIND_TAG] == "custom_model_development"
    client.delete_experiment_tag(exp_id, mlflow_run.EXPERIMENT_KIND_TAG)  # an older experiment
    assert mlflow_run.ensure_experiment(cfg) == exp_id
    assert client.get_experiment(exp_id).tags[mlflow_run.EXPERIMENT_KIND_TAG] == \
        "custom_model_development"


def test_expected_trials_counts_grid_combinations() -> None:
    from ecglm.tuning.sweep import expected_trials

    space = {"lora.r": [2, 4, 8], "lora.alpha": {"grid": [8, 16]},
             "train.lr": {"loguniform": [1e-4, 1e-2]}}
    cfg = _cfg(**{"tune.search": "random", "tune.num_samples": 5, "tune.search_space": space})
    assert expected_trials(cfg, parse_search_space(space, "random")) == 10  # 5 x alpha grid
    grid = {"lora.r": [2, 4, 8], "lora.alpha": {"grid": [8, 16]}}
    cfg = _cfg(**{"tune.search": "grid", "tune.num_samples": 2, "tune.search_space": grid})
    assert expected_trials(cfg, parse_search_space(grid, "grid")) == 12
