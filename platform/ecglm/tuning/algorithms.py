"""``tune.search`` and ``tune.scheduler`` as Ray Tune objects.

* search: ``grid``/``random`` (Tune's variant generator: every combination / ``num_samples``
  draws) or ``optuna`` (TPE, :class:`ray.tune.search.optuna.OptunaSearch`, seeded);
* scheduler: ``asha`` (rungs on the optimizer step: ``grace_period`` evaluations, then
  doubling), ``fifo`` or ``pbt`` (:class:`~ray.tune.schedulers.PopulationBasedTraining`
  perturbing ``tune.pbt_mutations`` every ``tune.perturbation_interval`` steps).

Schedulers count time in optimizer steps (``step`` in every report), not in reports: a trial
continued after ``ecglm tune --resume`` keeps its step count.
"""

from __future__ import annotations

from typing import Any, Mapping

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining
from ray.tune.search import BasicVariantGenerator

from ecglm.config import ExperimentConfig
from ecglm.config.search_space import Dimension
from ecglm.tuning.space import tune_domain

TIME_ATTR = "step"
"""Result key schedulers measure progress in."""


def eval_interval(cfg: ExperimentConfig) -> int:
    """Optimizer steps between evaluations (``train.eval_every``; the whole run when 0)."""
    return cfg.train.eval_every or cfg.train.max_steps


def pbt_interval(cfg: ExperimentConfig) -> int:
    """Steps per PBT segment (``tune.perturbation_interval``, default ``train.eval_every``)."""
    return min(cfg.tune.perturbation_interval or eval_interval(cfg), cfg.train.max_steps)


def make_scheduler(cfg: ExperimentConfig, dims: Mapping[str, Dimension]) -> Any:
    """The trial scheduler of ``tune.scheduler`` (metric and mode come from ``TuneConfig``)."""
    tc = cfg.tune
    if tc.scheduler == "asha":
        every = eval_interval(cfg)
        # max_t one past the last step: a trial that reaches it ends on its own (its run
        # closes FINISHED with its artifacts) instead of being stopped at its last report
        return ASHAScheduler(time_attr=TIME_ATTR, max_t=cfg.train.max_steps + 1,
                             grace_period=min(tc.grace_period * every, cfg.train.max_steps),
                             reduction_factor=2)
    if tc.scheduler == "pbt":
        mutations = {k: tune_domain(dims[k], "random") for k in tc.pbt_mutations}
        return PopulationBasedTraining(time_attr=TIME_ATTR,
                                       perturbation_interval=pbt_interval(cfg),
                                       hyperparam_mutations=mutations, quantile_fraction=0.5,
                                       resample_probability=0.25, synch=False)
    return FIFOScheduler()


def make_search(cfg: ExperimentConfig, metric: str, mode: str) -> Any:
    """The search algorithm of ``tune.search``, seeded with ``tune.seed`` (default ``seed``):
    Tune's variant generator (grid and random; the same seed draws the same trials) or
    ``OptunaSearch`` (TPE)."""
    seed = cfg.tune.seed if cfg.tune.seed is not None else cfg.seed
    if cfg.tune.search != "optuna":
        return BasicVariantGenerator(max_concurrent=cfg.tune.max_concurrent_trials,
                                     random_state=seed)
    from ray.tune.search.optuna import OptunaSearch  # deferred: imports optuna

    return OptunaSearch(metric=metric, mode=mode, seed=seed)
