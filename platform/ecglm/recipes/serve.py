"""``ecglm serve CONFIG --checkpoint X``: deploy encoder -> retriever -> LLM with Ray Serve and
block until Ctrl-C."""

from __future__ import annotations

import time

from ecglm.config import ExperimentConfig
from ecglm.checkpoint import resolve_checkpoint
from ecglm.recipes.common import ray_lifecycle
from ecglm.serving.launch import start, stop
from ecglm.train.run import prepare


def run(cfg: ExperimentConfig, checkpoint: str) -> None:
    """Serve ``checkpoint`` (folder or MLflow run id) until interrupted."""
    with ray_lifecycle(cfg):
        prep = prepare(cfg)
        ckpt, _ = resolve_checkpoint(prep.cfg, checkpoint)
        url = start(prep.cfg, ckpt, prep.retrieval.folder)
        fields = ", ".join(sorted({"ecg", "fs", *prep.task.request_fields}))
        print(f"[serve] POST {url} (JSON fields: {fields}) - Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            stop()
