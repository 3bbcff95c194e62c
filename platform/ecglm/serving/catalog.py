"""The models one application serves: the main model and the LoRA adapters of
``serve.adapters`` (resolved in the driver, checked to share the main model's base LLM).

Each served model answers on the route of its task (:data:`ROUTES`): a request picks an
adapter with the ``serve_multiplexed_model_id`` header; without it the main model answers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ecglm.checkpoint import CheckpointFileError, read_config, resolve_checkpoint
from ecglm.config import ExperimentConfig, from_dict
from ecglm.config.paths import resolve_paths

MAIN_MODEL = ""
"""Model id of the main model (no ``serve_multiplexed_model_id`` header)."""
ROUTES = {"qa": "answer", "report": "report", "grounding": "report", "classify": "classify"}
"""Route (``/v1/<route>``) of each task."""


class AdapterError(ValueError):
    """An adapter of ``serve.adapters`` cannot be served next to the main model."""


@dataclass(frozen=True)
class ServedModel:
    """One servable model: its config (task, prompt, ECG front end) and checkpoint folder."""

    name: str
    """:data:`MAIN_MODEL` or the adapter name."""
    cfg: ExperimentConfig
    checkpoint_dir: Path

    @property
    def task(self) -> str:
        return self.cfg.task

    @property
    def route(self) -> str:
        """``answer``, ``report`` or ``classify``."""
        return ROUTES[self.cfg.task]

    @property
    def retrieval(self) -> bool:
        """Whether its prompts carry retrieved reports (``retrieval.enabled``)."""
        return self.cfg.retrieval.enabled


@dataclass(frozen=True)
class ModelInfo:
    """What the ingress needs of a served model (no weights, no paths)."""

    task: str
    route: str
    retrieval: bool


def _differs(main: object, other: object, fields: tuple[str, ...]) -> list[str]:
    return [f for f in fields if getattr(main, f) != getattr(other, f)]


def check_compatible(main: ExperimentConfig, adapter: ExperimentConfig, name: str) -> None:
    """An adapter must share the main model's base LLM, LoRA layout, fusion and ECG input
    format: its LoRA tensors are swapped into the one base LLM of an LLM replica, and the
    ingress preprocesses every ECG once.

    Raises:
        AdapterError: naming the adapter and the differing keys.
    """
    bad = [f"llm.{f}" for f in _differs(main.llm, adapter.llm, ("source", "tiny", "dtype"))]
    if main.llm.source == "path" and main.llm.path != adapter.llm.path:
        bad.append("llm.path")
    bad += [f"lora.{f}" for f in _differs(main.lora, adapter.lora, ("r", "alpha",
                                                                      "target_modules"))]
    if main.fusion != adapter.fusion:
        bad.append("fusion")
    bad += [f"data.{f}" for f in _differs(main.data, adapter.data, ("fs", "seconds",
                                                                      "normalize"))]
    if adapter.task not in ROUTES:
        bad.append(f"task ({adapter.task!r} has no route)")
    if bad:
        raise AdapterError(f"serve.adapters.{name}: differs from the main model in "
                           f"{', '.join(bad)}; an adapter must be trained on the same base LLM, "
                           "LoRA layout, fusion and ECG format")


def adapter_config(main: ExperimentConfig, checkpoint_dir: Path, name: str) -> ExperimentConfig:
    """The adapter's own ``config.yaml`` with the main model's ``llm`` section (same base; the
    paths of this machine) and output paths.

    Raises:
        AdapterError: the checkpoint lacks its config or does not fit the main model.
    """
    try:
        raw = read_config(checkpoint_dir)
    except CheckpointFileError as exc:
        raise AdapterError(f"serve.adapters.{name}: {exc}") from None
    cfg = resolve_paths(from_dict(raw))
    check_compatible(main, cfg, name)
    return dataclasses.replace(cfg, llm=dataclasses.replace(
        main.llm, max_new_tokens=cfg.llm.max_new_tokens,
        use_chat_template=cfg.llm.use_chat_template), output_dir=main.output_dir)


def resolve_models(cfg: ExperimentConfig, checkpoint_dir: Path) -> dict[str, ServedModel]:
    """The main model and every adapter of ``serve.adapters`` (checkpoint references resolved
    like ``ecglm serve --checkpoint``: folder, MLflow run id or ``models:/NAME@ALIAS``)."""
    models = {MAIN_MODEL: ServedModel(MAIN_MODEL, cfg, Path(checkpoint_dir))}
    for name, ref in cfg.serve.adapters.items():
        folder, _ = resolve_checkpoint(cfg, ref)
        folder = Path(folder).resolve()
        models[name] = ServedModel(name, adapter_config(cfg, folder, name), folder)
    return models


def model_infos(models: dict[str, ServedModel]) -> dict[str, ModelInfo]:
    """Name -> :class:`ModelInfo` for the ingress."""
    return {n: ModelInfo(m.task, m.route, m.retrieval) for n, m in models.items()}
