"""What several recipes share: the Ray lifecycle and the evaluation of a prepared run."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import ray

from ecglm.checkpoint import read_state
from ecglm.config import ExperimentConfig
from ecglm.evaluation.sections import SectionInputs, build_sections
from ecglm.evaluation.writer import write_evaluation
from ecglm.models.from_checkpoint import load_model
from ecglm.tasks.base import EvalContext
from ecglm.train.run import Prepared, split_rows
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
                      out_dir: Optional[Path] = None) -> dict[str, Any]:
    """Evaluate ``checkpoint_dir`` on ``evaluation.split`` with the run's task, write the
    files next to the checkpoint (``../eval``) and log them to ``run_id``.

    Returns:
        ``{"metrics", "summary", <section keys>..., "report"?}`` for the CLI's JSON.
    """
    cfg = prep.cfg
    cache: dict[str, Any] = {}

    def model() -> Any:
        if "model" not in cache:
            cache["model"] = load_model(cfg, checkpoint_dir)
        return cache["model"]

    sections = build_sections(SectionInputs(
        cfg, Path(prep.shards.records), str(prep.shards.manifest.get("source", "")),
        prep.retrieval.neighbours, Path(prep.retrieval.folder),
        lambda: model().encoder.eval()))
    ctx = EvalContext(cfg, split_rows(prep, cfg.evaluation.split),
                      split_rows(prep, "train") if cfg.evaluation.baselines else [],
                      prep.retrieval.neighbour_ids, model, sections, str(checkpoint_dir),
                      read_state(checkpoint_dir).step, run_id)
    outcome = prep.task.evaluate(ctx)
    result = write_evaluation(outcome, out_dir or checkpoint_dir.parent / "eval",
                              split=cfg.evaluation.split, checkpoint=str(checkpoint_dir),
                              checkpoint_step=ctx.checkpoint_step, run_id=run_id,
                              tracking_uri=cfg.tracking.tracking_uri)
    report = result.report_path
    return {"metrics": result.metrics, "summary": str(result.summary_path),
            **{sec.key: sec.summary for sec in sections},
            **({"report": str(report)} if report else {})}
