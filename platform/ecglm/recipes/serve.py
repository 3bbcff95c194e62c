"""``ecglm serve CONFIG --checkpoint X`` (folder, MLflow run id or ``models:/NAME@ALIAS``):
deploy encoder -> retriever -> LLM with Ray Serve and block until Ctrl-C."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from ecglm.config import ExperimentConfig
from ecglm.checkpoint import resolve_checkpoint
from ecglm.recipes.common import ray_lifecycle
from ecglm.serving.launch import start, stop
from ecglm.train.run import Prepared, prepare


def start_prepared(prep: Prepared, checkpoint: str,
                   timeout_s: Optional[float] = None) -> tuple[str, Path]:
    """Resolve ``checkpoint`` (folder, MLflow run id, ``models:/NAME@ALIAS`` or
    ``models:/NAME/VERSION``) and deploy it with the retrieval index of ``prep``; returns
    ``(url, checkpoint folder)``. Ray must be running."""
    ckpt, _ = resolve_checkpoint(prep.cfg, checkpoint)
    if timeout_s is None:
        return start(prep.cfg, ckpt, prep.retrieval.folder), ckpt
    return start(prep.cfg, ckpt, prep.retrieval.folder, timeout_s=timeout_s), ckpt


def run(cfg: ExperimentConfig, checkpoint: str) -> None:
    """Serve ``checkpoint`` (folder, MLflow run id or ``models:/...``) until interrupted."""
    with ray_lifecycle(cfg):
        prep = prepare(cfg)
        url, _ = start_prepared(prep, checkpoint)
        fields = ", ".join(sorted({"ecg", "fs", *prep.task.request_fields}))
        print(f"[serve] POST {url} (JSON fields: {fields}) - Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            stop()
