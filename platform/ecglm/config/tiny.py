"""``--tiny``: shrink any preset to CPU/test size while keeping its architecture.

The part *names* (encoder, mapper, fusion, task, LoRA targets, strategy) stay as the preset sets
them; only widths, depths, data size and step counts shrink, so a tiny run exercises exactly the
code path of the full-size run.
"""

from __future__ import annotations

from ecglm.config.loader import apply_overrides
from ecglm.config.schema import ExperimentConfig


def tiny_overrides(cfg: ExperimentConfig) -> dict[str, object]:
    """Dotted overrides that shrink ``cfg`` (see the module docstring)."""
    raise NotImplementedError  # filled in below (kept importable for the CLI)


def shrink(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with :func:`tiny_overrides` applied."""
    return apply_overrides(cfg, tiny_overrides(cfg))
