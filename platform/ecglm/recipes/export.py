"""``ecglm export CONFIG --checkpoint X --out DIR``: merge LoRA into the LLM and write a
peft-free folder (merged LLM + tokenizer, ECG-side weights, config)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecglm.config import ExperimentConfig
from ecglm.checkpoint import resolve_checkpoint
from ecglm.models.from_checkpoint import load_model
from ecglm.models.export import export_merged


def run(cfg: ExperimentConfig, checkpoint: str, out: Path) -> dict[str, Any]:
    """Export ``checkpoint`` (folder or MLflow run id) to ``out``."""
    folder, run_id = resolve_checkpoint(cfg, checkpoint)
    path = export_merged(load_model(cfg, folder), out, in_place=True)
    return {"checkpoint": str(folder), "mlflow_run_id": run_id, "out": str(path)}
