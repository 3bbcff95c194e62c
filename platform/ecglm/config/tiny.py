"""``--tiny``: shrink any preset to CPU/test size while keeping its architecture.

The part *names* (encoder, mapper, fusion, task, LoRA target modules, training strategy and
ZeRO stage, schedule) stay as the preset sets them; widths, depths, data size, sequence
lengths and step counts shrink, so a tiny run exercises the same code path as the full-size
run. Data becomes the deterministic synthetic set at 100 Hz (no ``../shared`` needed), the LLM
a tiny random Llama (``llm.source: tiny``) and image towers a tiny random CLIP vision model.
Dotted CLI overrides are applied after this, so ``--tiny train.max_steps=2`` wins. Encoder
sizes are declared by the encoder config sections themselves (``TINY`` in
:mod:`ecglm.config.encoders`); this module keeps no per-encoder table.
"""

from __future__ import annotations

from typing import Any

from ecglm.config.encoders import encoder_tiny_overrides
from ecglm.config.overrides import apply_overrides
from ecglm.config.schema import ExperimentConfig

_TINY_GENERAL: dict[str, Any] = {
    "data.source": "synthetic", "data.synthetic_records": 40, "data.fs": 100,
    "data.seconds": 10.0, "data.valid_fraction": 0.2, "data.test_fraction": 0.2,
    "data.records_per_shard": 16, "data.qa_split": "seeded",
    "mapper.n_layers": 1, "mapper.n_heads": 2, "mapper.dropout": 0.0,
    "llm.source": "tiny", "lora.r": 4, "lora.alpha": 8, "lora.dropout": 0.0,
    "train.num_workers": 2, "train.cpus_per_worker": 1.0, "train.use_gpu": False,
    "train.batch_size": 2, "train.max_steps": 4, "train.eval_every": 2, "train.lr": 1.0e-3,
    "train.ray_num_cpus": 4,
    "evaluation.batch_size": 4, "evaluation.max_items": 8, "evaluation.report_examples": 2,
    "evaluation.noise_snr_db": [], "evaluation.judge": "none", "evaluation.transfer": None,
    "evaluation.classification": False, "evaluation.report_metrics": False,
    "tune.trial_overrides": {"train.max_steps": 2, "train.eval_every": 1},
    "pretrain.epochs": 1, "pretrain.batch_size": 8, "pretrain.embed_dim": 32,
    "pretrain.max_text_tokens": 32,
}
"""Overrides of the non-encoder sections every tiny config gets."""

TINY_FIXED: dict[str, Any] = {**_TINY_GENERAL, **encoder_tiny_overrides()}
"""Overrides every tiny config gets (sizes chosen so a 2-worker CPU run takes seconds): the
general ones plus every encoder section's own ``TINY`` (:mod:`ecglm.config.encoders`)."""


def tiny_overrides(cfg: ExperimentConfig) -> dict[str, Any]:
    """Dotted overrides that shrink ``cfg``: :data:`TINY_FIXED` plus the size-dependent ones
    (prefix tokens, text lengths, name)."""
    out = dict(TINY_FIXED)
    if cfg.mapper.n_tokens > 0:
        out["mapper.n_tokens"] = min(cfg.mapper.n_tokens, 4)
    out["llm.max_length"] = min(cfg.llm.max_length, 192)
    out["llm.max_new_tokens"] = min(cfg.llm.max_new_tokens, 8)
    out["name"] = cfg.name if cfg.name.endswith("-tiny") else f"{cfg.name}-tiny"
    out["tracking.experiment"] = (cfg.tracking.experiment if cfg.tracking.experiment
                                  .endswith("-tiny") else f"{cfg.tracking.experiment}-tiny")
    return out


def shrink(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with :func:`tiny_overrides` applied (same architecture, CPU size)."""
    return apply_overrides(cfg, tiny_overrides(cfg))
