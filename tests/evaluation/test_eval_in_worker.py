"""Evaluation runs in a Ray worker with the configured resources, never in the driver, and
gives the same outcome as the same evaluation done in-process."""

from __future__ import annotations

import dataclasses
import inspect
import os
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from types import CodeType, FrameType
from typing import Any, Iterator

import pytest
import torch

from ecglm.config import ExperimentConfig, apply_overrides


def test_eval_resources_default_to_the_train_workers() -> None:
    from ecglm.recipes.eval_worker import eval_resources

    cfg = apply_overrides(ExperimentConfig(), {"train.cpus_per_worker": 3.0})
    assert eval_resources(cfg) == {"num_cpus": 3.0, "num_gpus": 0.0}
    gpu = apply_overrides(cfg, {"train.use_gpu": True})
    assert eval_resources(gpu) == {"num_cpus": 3.0, "num_gpus": 1.0}
    own = apply_overrides(gpu, {"evaluation.num_cpus": 0.5, "evaluation.num_gpus": 0.25})
    assert eval_resources(own) == {"num_cpus": 0.5, "num_gpus": 0.25}


@pytest.mark.parametrize("key, value", [("evaluation.num_cpus", 0), ("evaluation.num_gpus", -1)])
def test_eval_resource_errors_name_the_key(key: str, value: float) -> None:
    from ecglm.config import ConfigError

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        apply_overrides(ExperimentConfig(), {key: value})


def _model_code() -> dict[CodeType, str]:
    """Code objects whose call means 'a model is built or run here'."""
    from transformers import PreTrainedModel

    from ecglm.models import ecg_lm, from_checkpoint, llm

    fns = {"load_model": from_checkpoint.load_model, "build_ecg_lm": ecg_lm.build_ecg_lm,
           "load_llm": llm.load_llm,
           "from_pretrained": inspect.unwrap(PreTrainedModel.from_pretrained.__func__),
           "generate_ids": ecg_lm.ECGLanguageModel.generate_ids,
           "nn.Module.__init__": torch.nn.Module.__init__}
    return {inspect.unwrap(f).__code__: name for name, f in fns.items()}


class CallWatch:
    """Records calls of watched code objects in this thread (``sys.setprofile``: observes,
    replaces nothing)."""

    def __init__(self, watched: dict[CodeType, str]) -> None:
        self.watched = watched
        self.seen: list[str] = []

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code in self.watched:
            self.seen.append(self.watched[frame.f_code])

    @contextmanager
    def watching(self) -> Iterator[None]:
        previous = sys.getprofile()
        sys.setprofile(self)
        try:
            yield
        finally:
            sys.setprofile(previous)


@pytest.mark.slow
def test_evaluation_runs_in_a_ray_worker_with_the_driver_result(tiny_eval, tmp_path: Path
                                                                ) -> None:
    """The driver neither builds nor runs a model during ``evaluate_prepared``; the worker
    (another process) does, on its device, and its metrics and predictions equal those of
    the same evaluation run in this process with the same thread count."""
    from ecglm.checkpoint import read_state
    from ecglm.evaluation.sections import SectionInputs, build_sections
    from ecglm.models.from_checkpoint import load_model
    from ecglm.recipes.common import evaluate_prepared
    from ecglm.tasks.base import EvalContext
    from ecglm.train.run import split_rows

    prep, ckpt = tiny_eval
    ev = dataclasses.replace(prep.cfg.evaluation, max_items=6, report_examples=1)
    prep = dataclasses.replace(prep, cfg=dataclasses.replace(prep.cfg, evaluation=ev))
    watch = CallWatch(_model_code())
    with watch.watching():
        res = evaluate_prepared(prep, ckpt, None, tmp_path / "eval")
    assert watch.seen == [], f"the driver built or ran a model: {sorted(set(watch.seen))}"
    worker = res["worker"]
    assert worker["pid"] != os.getpid() and worker["model_loaded"]
    assert worker["device"] == "cpu" and worker["gpu_ids"] == ()
    assert worker["num_cpus"] == prep.cfg.train.cpus_per_worker and worker["num_gpus"] == 0.0
    assert (tmp_path / "eval" / "eval_summary.json").exists()
    assert (tmp_path / "eval" / "em_per_type.png").exists()

    # the same evaluation in this process (the pre-worker code path), same thread count
    cfg, threads = prep.cfg, torch.get_num_threads()
    torch.set_num_threads(int(cfg.train.cpus_per_worker))
    try:
        model = load_model(cfg, ckpt)
        sections = build_sections(SectionInputs(
            cfg, Path(prep.shards.records), str(prep.shards.manifest.get("source", "")),
            prep.retrieval.neighbours, Path(prep.retrieval.folder), lambda: model.encoder))
        ctx = EvalContext(cfg, split_rows(prep, cfg.evaluation.split),
                          split_rows(prep, "train") if cfg.evaluation.baselines else [],
                          prep.retrieval.neighbour_ids, lambda: model, sections, str(ckpt),
                          read_state(ckpt).step, None)
        local = prep.task.evaluate(ctx)
    finally:
        torch.set_num_threads(threads)
    assert res["metrics"] == local.metrics
    got = json.loads((tmp_path / "eval" / "predictions.json").read_text())
    assert got == json.loads(json.dumps(local.tables["predictions.json"]))


@pytest.mark.slow
def test_missing_checkpoint_fails_in_the_worker_with_its_own_type(tiny_eval, tmp_path: Path
                                                                  ) -> None:
    """A checkpoint folder the worker's node cannot see is a FileNotFoundError naming the
    folder, the node and ``output_dir`` (the CLI prints it as a user error)."""
    from ecglm.recipes.common import evaluate_prepared

    prep, _ = tiny_eval
    missing = tmp_path / "nowhere" / "checkpoint"
    with pytest.raises(FileNotFoundError, match="output_dir") as exc:
        evaluate_prepared(prep, missing, None, tmp_path / "eval")
    assert str(missing) in str(exc.value) and "Ray node" in str(exc.value)
    assert not (tmp_path / "eval").exists()
