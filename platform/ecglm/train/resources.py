"""Resource preflight: can the cluster place the Train workers *and* their Ray Data ingest?

A Ray Train run holds its workers' CPUs for its whole life (a placement group of
``train.num_workers`` bundles of ``{"CPU": train.cpus_per_worker, "GPU": 1 if use_gpu}``),
while the Ray Data pipeline that feeds them needs CPUs of its own: every Ray Data task takes
one CPU. When the workers take every CPU (2 workers x 1 CPU on a 2-CPU head) the dataset never
yields a row and the run waits forever. So the run reserves ``train.data_cpus`` CPUs for the
ingest: this check requires them free beside the workers before anything starts, and the runner
caps Ray Data at them (:func:`ecglm.train.runner.ingest_options`).

:func:`decide` is a pure function of a :class:`Demand` and a :class:`ClusterView` (alive nodes'
total resources; autoscaling node types when the cluster reports them); :func:`read_cluster`
builds the view from the running Ray; :func:`check_resources` reads both from a config and
raises :class:`ResourcePlanError` (a ``ConfigError``: the CLI exits 2) with the numbers, the
reason and the keys to change. A sweep needs ``tune.max_concurrent_trials`` trials at once, each
with a small driver actor (:data:`TRIAL_CPUS`). The evaluation task (``evaluation.num_cpus`` /
``num_gpus``) runs after training and must fit on one node by itself.

Placement is simulated per node, as Ray places bundles: a worker fits on one node, the
strategy (``train.placement_strategy``) decides how workers share nodes, and the ingest needs
whole-CPU slots left over after every trial's workers are placed. When the cluster autoscales,
nodes of its node types (up to their ``max_count``) count as capacity; when it autoscales but
its node types cannot be read (the legacy ``ray up`` autoscaler), a shortfall is printed as a
warning instead of failing.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Mapping, Optional, Sequence

from ecglm.config import ExperimentConfig, apply_overrides
from ecglm.config.search_space import parse_search_space
from ecglm.config.schema import ConfigError

TRIAL_CPUS = 0.1
"""CPU of one Ray Tune trial's driver actor (``tune.with_resources`` in ``tuning.sweep``)."""
DATA_TASK_CPUS = 1.0
"""CPU of one Ray Data read/map task (Ray Data's default)."""
RESOURCE_KEYS = ("train.num_workers", "train.cpus_per_worker", "train.use_gpu",
                 "train.data_cpus", "train.placement_strategy")
"""Config keys that change what a run needs (a sweep over them is checked per value)."""
_EPS = 1e-6


class ResourcePlanError(ConfigError):
    """The cluster cannot place the run's workers plus its ingest (the message has the numbers
    and the keys to change)."""


@dataclass(frozen=True)
class NodeType:
    """An autoscaling node type as the cluster reports it."""

    name: str
    resources: Mapping[str, float]
    """Resources of one node of this type (``CPU``, ``GPU``, ...)."""
    min_count: int
    max_count: int
    """Most nodes of this type; -1: no limit."""


@dataclass(frozen=True)
class ClusterView:
    """What the running Ray cluster can place."""

    nodes: tuple[Mapping[str, float], ...]
    """Total resources of each alive node."""
    local: bool = False
    """A Ray instance this process started (sized by ``train.ray_num_cpus``)."""
    autoscaling: bool = False
    """The cluster can add nodes."""
    node_types: Optional[tuple[NodeType, ...]] = None
    """Its node types when it reports them (None: unknown)."""
    available: Optional[Mapping[str, float]] = None
    """Resources free right now, cluster-wide (for a note when other jobs hold them)."""


@dataclass(frozen=True)
class Demand:
    """What one run needs at once."""

    num_workers: int
    worker: Mapping[str, float]
    """One Train worker's bundle: ``{"CPU": cpus_per_worker}`` (+ ``"GPU": 1``)."""
    data_cpus: float
    """CPUs of the Ray Data ingest of one run (``train.data_cpus``)."""
    placement_strategy: str = "PACK"
    trials: int = 1
    """Runs at once (``tune.max_concurrent_trials`` for a sweep)."""
    trial_cpus: float = 0.0
    """CPU of each run's Tune trial actor (0: not a sweep)."""
    eval_task: Optional[Mapping[str, float]] = None
    """The evaluation task's resources (``{"CPU", "GPU"}``), run alone after training."""
    label: str = ""
    """Which variant of a sweep this is (for the message); empty otherwise."""

    def per_trial(self, key: str) -> float:
        """Total ``key`` (``CPU``/``GPU``) one run holds: workers + ingest (+ trial actor)."""
        extra = (self.data_cpus + self.trial_cpus) if key == "CPU" else 0.0
        return self.num_workers * self.worker.get(key, 0.0) + extra

    def total(self, key: str) -> float:
        return self.trials * self.per_trial(key)


@dataclass(frozen=True)
class Verdict:
    """Outcome of :func:`decide`."""

    fits: bool
    reason: str = ""
    """Why it does not fit (empty when it fits)."""
    enforce: bool = True
    """False when a shortfall may be covered by an autoscaler whose node types are unknown:
    then it is a warning, not an error."""
    fixes: tuple[str, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------------------- placement model

def _fits(bundle: Mapping[str, float], free: Mapping[str, float]) -> bool:
    return all(free.get(k, 0.0) + _EPS >= v for k, v in bundle.items() if v > 0)


def _take(bundle: Mapping[str, float], free: dict[str, float]) -> None:
    for k, v in bundle.items():
        free[k] = free.get(k, 0.0) - v


def _place_one(bundle: Mapping[str, float], free: list[dict[str, float]],
               spread: bool = False, exclude: frozenset[int] = frozenset()) -> Optional[int]:
    """Put ``bundle`` on the node with the least (``spread``: most) free CPU that fits; its
    index, or None."""
    options = [i for i, f in enumerate(free) if i not in exclude and _fits(bundle, f)]
    if not options:
        return None
    pick = (max if spread else min)(options, key=lambda i: free[i].get("CPU", 0.0))
    _take(bundle, free[pick])
    return pick


def _place_workers(d: Demand, free: list[dict[str, float]]) -> Optional[str]:
    """Place one run's worker bundles by ``d.placement_strategy``; None, or why not."""
    w, n = d.worker, d.num_workers
    if d.placement_strategy == "STRICT_PACK":
        group = {k: v * n for k, v in w.items()}
        if _place_one(group, free) is None:
            return (f"train.placement_strategy=STRICT_PACK puts all {n} workers on one node, "
                    f"and no node has {_fmt(group)} free")
        return None
    used: set[int] = set()
    for i in range(n):
        strict = d.placement_strategy == "STRICT_SPREAD"
        got = _place_one(w, free, spread=d.placement_strategy != "PACK",
                         exclude=frozenset(used) if strict else frozenset())
        if got is None:
            if strict:
                return (f"train.placement_strategy=STRICT_SPREAD needs {n} distinct nodes "
                        f"with {_fmt(w)} free each; only {i} found")
            return f"Train worker {i + 1} of {n} ({_fmt(w)}) fits on no node"
        used.add(got)
    return None


def _data_chunks(data_cpus: float) -> list[float]:
    whole = int(math.floor(data_cpus / DATA_TASK_CPUS + _EPS))
    rest = data_cpus - whole * DATA_TASK_CPUS
    return [DATA_TASK_CPUS] * whole + ([rest] if rest > _EPS else [])


def place(d: Demand, capacity: Sequence[Mapping[str, float]]) -> Optional[str]:
    """Simulate placing every run of ``d`` on nodes of ``capacity``: trial actors, then every
    run's workers (Ray reserves them as placement groups), then each run's ingest CPUs in
    leftover one-CPU slots. None when everything fits, else the reason."""
    free = [dict(c) for c in capacity]
    for t in range(d.trials):
        if d.trial_cpus > 0 and _place_one({"CPU": d.trial_cpus}, free) is None:
            return f"no CPU left for Tune trial {t + 1}'s driver ({d.trial_cpus} CPU)"
    for t in range(d.trials):
        why = _place_workers(d, free)
        if why:
            return why + (f" (trial {t + 1} of {d.trials} running at once)" if d.trials > 1
                          else "")
    for t in range(d.trials):
        for chunk in _data_chunks(d.data_cpus):
            if _place_one({"CPU": chunk}, free, spread=True) is None:
                left = sum(max(0.0, f.get("CPU", 0.0)) for f in free)
                return (f"after the Train workers are placed, {left:g} CPU is left "
                        f"(largest slot {max((f.get('CPU', 0.0) for f in free), default=0):g}),"
                        f" but the Ray Data ingest needs {d.data_cpus:g} CPU in one-CPU tasks "
                        "(train.data_cpus): the dataset would never yield a row and training "
                        "would wait forever")
    return None


def _capacity(d: Demand, view: ClusterView) -> list[Mapping[str, float]]:
    """Alive nodes, plus nodes the autoscaler may add (known node types, up to ``max_count``,
    never more than the run has bundles)."""
    nodes = list(view.nodes)
    if view.autoscaling and view.node_types:
        bundles = d.trials * (d.num_workers + len(_data_chunks(d.data_cpus)) + 1) + 1
        for t in view.node_types:
            extra = bundles if t.max_count < 0 else max(0, t.max_count - t.min_count)
            nodes.extend([dict(t.resources)] * min(extra, bundles))
    return nodes


def _eval_reason(d: Demand, capacity: Sequence[Mapping[str, float]]) -> Optional[str]:
    task = {k: v for k, v in (d.eval_task or {}).items() if v > 0}
    if task and not any(_fits(task, c) for c in capacity):
        return (f"the evaluation task needs {_fmt(task)} on one node (evaluation.num_cpus, "
                "evaluation.num_gpus) and no node has that much")
    return None


def fits(d: Demand, view: ClusterView) -> bool:
    """Whether every part of ``d`` can be placed on ``view``."""
    cap = _capacity(d, view)
    return place(d, cap) is None and _eval_reason(d, cap) is None


def _fixes(d: Demand, view: ClusterView) -> list[str]:
    """Single-key changes that make ``d`` fit on ``view``, the mildest first."""
    out: list[str] = []
    if _eval_reason(d, _capacity(d, view)) is not None:
        return ["lower evaluation.num_cpus / evaluation.num_gpus, or add a larger node"]
    cpw = d.worker.get("CPU", 0.0)
    for k in range(int(round(cpw * 20)) - 1, 0, -1):  # multiples of 0.05 below the value
        if fits(replace(d, worker={**d.worker, "CPU": k / 20}), view):
            out.append(f"train.cpus_per_worker={k / 20:g}")
            break
    for n in range(d.num_workers - 1, 0, -1):
        if fits(replace(d, num_workers=n), view):
            out.append(f"train.num_workers={n}")
            break
    if d.data_cpus > DATA_TASK_CPUS and fits(replace(d, data_cpus=DATA_TASK_CPUS), view):
        out.append(f"train.data_cpus={DATA_TASK_CPUS:g}")
    for k in range(d.trials - 1, 0, -1):
        if fits(replace(d, trials=k), view):
            out.append(f"tune.max_concurrent_trials={k}")
            break
    if view.local and len(view.nodes) == 1 and not d.worker.get("GPU"):
        out.append(f"train.ray_num_cpus={math.ceil(d.total('CPU') - _EPS)} (the local Ray "
                   "instance's logical CPUs)")
    out.append("add CPUs or nodes to the cluster (`ray start --num-cpus N`, more worker nodes)"
               if not d.worker.get("GPU") else "add GPU nodes to the cluster")
    return out


def decide(d: Demand, view: ClusterView) -> Verdict:
    """Whether ``d`` fits ``view`` (pure; see the module docstring)."""
    cap = _capacity(d, view)
    reason = place(d, cap) or _eval_reason(d, cap)
    if reason is None:
        return Verdict(True)
    unknown_scaling = view.autoscaling and not view.node_types
    return Verdict(False, reason, enforce=not unknown_scaling, fixes=tuple(_fixes(d, view)))


# ---------------------------------------------------------------------------- messages

def _fmt(bundle: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in bundle.items() if v > 0) + "}"


def _cluster_line(view: ClusterView) -> str:
    cpus = [n.get("CPU", 0.0) for n in view.nodes]
    gpus = sum(n.get("GPU", 0.0) for n in view.nodes)
    line = (f"{sum(cpus):g} CPU{f', {gpus:g} GPU' if gpus else ''} on {len(cpus)} node(s) "
            f"(CPUs per node: {', '.join(f'{c:g}' for c in cpus) or 'none'})")
    if view.local:
        line += ", a local Ray instance (train.ray_num_cpus)"
    if view.autoscaling:
        line += ("; autoscaling node types: " + ", ".join(
            f"{t.name} {_fmt(t.resources)} x{'unlimited' if t.max_count < 0 else t.max_count}"
            for t in view.node_types) if view.node_types else
            "; an autoscaler whose node types are unknown")
    else:
        line += "; no autoscaler"
    return line


def describe(d: Demand, view: ClusterView, verdict: Verdict) -> str:
    """The refusal (or warning) text: what the run needs, what the cluster has, why it does
    not fit, what to change."""
    per = (f"{d.num_workers} Train worker(s) x {_fmt(d.worker)} (train.num_workers, "
           f"train.cpus_per_worker{', train.use_gpu' if d.worker.get('GPU') else ''}) + "
           f"{d.data_cpus:g} CPU for the Ray Data ingest (train.data_cpus)")
    if d.trial_cpus:
        per += f" + {d.trial_cpus:g} CPU for the Tune trial"
    need = f"{d.per_trial('CPU'):g} CPU" + (f", {d.per_trial('GPU'):g} GPU"
                                            if d.per_trial("GPU") else "")
    needs = f"{per} = {need}"
    if d.trials > 1:
        needs += (f"; x {d.trials} trials at once (tune.max_concurrent_trials) = "
                  f"{d.total('CPU'):g} CPU")
    head = ("train.resource_check: this cluster cannot run the job without waiting forever"
            + (f" ({d.label})" if d.label else ""))
    lines = [head, f"  needs:   {needs}", f"  cluster: {_cluster_line(view)}",
             f"  problem: {verdict.reason}",
             "  fix (any one): " + " | ".join(verdict.fixes),
             "  (train.resource_check=false skips this check)"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- cluster and config

def _node_types() -> tuple[bool, Optional[tuple[NodeType, ...]]]:
    """(autoscaling, node types) as the cluster reports them.

    Node types come from the autoscaler's cluster config in the GCS (the source Ray Train and
    Ray Data use for the same question). Without it, the legacy autoscaler's status in the GCS
    KV tells whether nodes have provider node types (``ray up``: autoscaling, types unknown)
    or are only the nodes that joined (``ray start``: no autoscaler).
    """
    try:
        from ray._private.state import state  # private: Ray exposes no public reader

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - an unreadable config means "unknown", never a failure
        config = None
    if config is not None and config.node_group_configs:
        types = tuple(NodeType(g.name, {k: float(v) for k, v in g.resources.items()},
                               int(g.min_count), int(g.max_count))
                      for g in config.node_group_configs if g.resources and g.max_count != 0)
        scaling = any(t.max_count < 0 or t.max_count > t.min_count for t in types)
        return scaling, (types or None)
    try:
        from ray.experimental.internal_kv import _internal_kv_get

        raw = _internal_kv_get("__autoscaling_status")
        report = (json.loads(raw) if raw else {}).get("autoscaler_report") or {}
    except Exception:  # noqa: BLE001 - as above
        report = {}
    mapping = report.get("node_type_mapping") or {}
    # `ray start` nodes get the read-only provider's anonymous type "node_<id>"
    return any(kind not in (node, f"node_{node}") for node, kind in mapping.items()), None


def read_cluster() -> ClusterView:
    """The running Ray cluster's :class:`ClusterView` (Ray must be initialised)."""
    import ray  # deferred on purpose: the decision functions above need no Ray

    nodes = tuple({k: float(v) for k, v in n["Resources"].items()}
                  for n in ray.nodes() if n.get("Alive"))
    scaling, types = _node_types()
    return ClusterView(nodes, local=not os.environ.get("RAY_ADDRESS"), autoscaling=scaling,
                       node_types=types, available=dict(ray.available_resources()))


def demand(cfg: ExperimentConfig, *, trials: int = 1, trial_cpus: float = 0.0,
           eval_task: Optional[Mapping[str, float]] = None, label: str = "") -> Demand:
    """The :class:`Demand` of ``cfg``'s ``train`` section.

    Args:
        eval_task: the evaluation task's Ray options ``{"num_cpus", "num_gpus"}``
            (:func:`ecglm.recipes.eval_worker.eval_resources`); None: no evaluation.
    """
    t = cfg.train
    worker = {"CPU": float(t.cpus_per_worker), **({"GPU": 1.0} if t.use_gpu else {})}
    task = ({"CPU": float(eval_task.get("num_cpus", 0.0)),
             "GPU": float(eval_task.get("num_gpus", 0.0))} if eval_task else None)
    return Demand(t.num_workers, worker, float(t.data_cpus), t.placement_strategy, trials,
                  trial_cpus, task, label)


def sweep_variants(cfg: ExperimentConfig) -> list[tuple[str, ExperimentConfig]]:
    """``cfg`` with ``tune.trial_overrides`` applied, once per combination of the
    :data:`RESOURCE_KEYS` values in ``tune.search_space`` (one entry when it sweeps none)."""
    base = apply_overrides(cfg, cfg.tune.trial_overrides) if cfg.tune.trial_overrides else cfg
    dims = parse_search_space(cfg.tune.search_space, cfg.tune.search)
    keys = [k for k in dims if k in RESOURCE_KEYS]
    if not keys:
        return [("", base)]
    out = []  # a sampled resource key is checked at both ends of its range
    for values in itertools.product(*(dims[k].probe_values() for k in keys)):
        over = dict(zip(keys, values))
        out.append((" ".join(f"{k}={v}" for k, v in over.items()), apply_overrides(base, over)))
    return out


def check_demand(d: Demand, view: ClusterView) -> Verdict:
    """Raise for a shortfall (print it when an autoscaler of unknown node types may cover it);
    print a note when other jobs hold what the run needs right now."""
    verdict = decide(d, view)
    if not verdict.fits:
        text = describe(d, view, verdict)
        if verdict.enforce:
            raise ResourcePlanError(text)
        print("resource check (warning, the autoscaler may add nodes):\n" + text,
              file=sys.stderr)
        return verdict
    free = (view.available or {}).get("CPU")
    if free is not None and free + _EPS < d.total("CPU"):
        print(f"resource check: the run needs {d.total('CPU'):g} CPU and {free:g} CPU are free "
              "now: it waits until other jobs release them", file=sys.stderr)
    return verdict


def check_resources(cfg: ExperimentConfig, *, sweep: bool = False,
                    eval_task: Optional[Mapping[str, float]] = None,
                    view: Optional[ClusterView] = None) -> Optional[Verdict]:
    """Refuse ``cfg`` when the running cluster cannot place its workers plus ingest
    (``train.resource_check``; None when off). Call it after Ray is up, before any worker
    starts.

    Args:
        sweep: ``cfg`` is a sweep: ``tune.max_concurrent_trials`` runs at once, each with a
            trial actor, checked for every value of a swept resource key.
        eval_task: resources of the evaluation task that follows training (None: none).
        view: the cluster (default: :func:`read_cluster`).

    Raises:
        ResourcePlanError: it cannot be placed (message from :func:`describe`).
    """
    if not cfg.train.resource_check:
        return None
    view = view or read_cluster()
    if not sweep:
        return check_demand(demand(cfg, eval_task=eval_task), view)
    verdict: Optional[Verdict] = None
    for label, variant in sweep_variants(cfg):
        verdict = check_demand(demand(variant, trials=variant.tune.max_concurrent_trials,
                                      trial_cpus=TRIAL_CPUS, label=label), view)
    return verdict


def check_eval_task(cfg: ExperimentConfig, eval_task: Mapping[str, float],
                    view: Optional[ClusterView] = None) -> bool:
    """For commands that only evaluate (``ecglm eval``): refuse when no node can ever run the
    evaluation task (``train.resource_check``; True when it fits or the check is off).

    Args:
        eval_task: the task's Ray options ``{"num_cpus", "num_gpus"}``.

    Raises:
        ResourcePlanError: no node (nor autoscaling node type) has that much.
    """
    if not cfg.train.resource_check:
        return True
    view = view or read_cluster()
    task = {"CPU": float(eval_task.get("num_cpus", 0.0)),
            "GPU": float(eval_task.get("num_gpus", 0.0))}
    d = Demand(0, {}, 0.0, eval_task=task)
    reason = _eval_reason(d, _capacity(d, view))
    if reason is None:
        return True
    text = (f"train.resource_check: {reason}\n  cluster: {_cluster_line(view)}\n"
            "  (train.resource_check=false skips this check)")
    if view.autoscaling and not view.node_types:
        print("resource check (warning, the autoscaler may add nodes):\n" + text,
              file=sys.stderr)
        return False
    raise ResourcePlanError(text)
