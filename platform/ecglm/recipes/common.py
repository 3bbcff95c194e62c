"""What several recipes share: the Ray lifecycle and the evaluation of a prepared run."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import ray

from ecglm.config import ExperimentConfig
from ecglm.evaluation.writer import write_evaluation
from ecglm.recipes.eval_worker import run_in_worker
from ecglm.train.run import Prepared
from ecglm.utils.ray_env import init_ray


@contextmanager
def ray_lifecycle(cfg: ExperimentConfig) -> Iterator[None]:
    """Start (or join) Ray for a command and shut it down afterwards if this command started
    it (a driver already connected, e.g. a test session or a Ray job, keeps its Ray)."""
    started = not ray.is_initialized()
    init_ray(cfg.train.ray_num_cpus)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def evaluate_prepared(prep: Prepared, checkpoint_dir: Path, run_id: Optional[str],
                      out_dir: Optional[Path] = None,
                      extra_sections: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """Evaluate ``checkpoint_dir`` on ``evaluation.split`` with the run's task, write the
    files next to the checkpoint (``../eval``) and log them to ``run_id``.

    The model is loaded and run in a Ray task (:mod:`ecglm.recipes.eval_worker`, resources
    ``evaluation.num_cpus``/``num_gpus``), never in this process; this process writes the
    returned outcome (on a cluster, ``output_dir`` must be shared: the task reads the
    checkpoint there). Starts (and then stops) a local Ray when none is running.

    Returns:
        ``{"metrics", "summary", <section keys>..., "report"?, "worker"}`` for the CLI's JSON;
        ``worker`` says where the evaluation ran (pid, node id, device, resources).
    """
    cfg = prep.cfg
    checkpoint_dir = Path(checkpoint_dir).resolve()  # the worker runs in another directory
    with ray_lifecycle(cfg):
        done = run_in_worker(prep, checkpoint_dir, run_id)
    result = write_evaluation(done.outcome, out_dir or checkpoint_dir.parent / "eval",
                              split=cfg.evaluation.split, checkpoint=str(checkpoint_dir),
                              checkpoint_step=done.checkpoint_step, run_id=run_id,
                              tracking_uri=cfg.tracking.tracking_uri,
                              extra_sections=extra_sections)
    report = result.report_path
    return {"metrics": result.metrics, "summary": str(result.summary_path),
            **{sec.key: sec.summary for sec in done.sections},
            **({"report": str(report)} if report else {}),
            "worker": asdict(done.placement)}
