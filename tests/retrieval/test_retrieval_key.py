"""The retrieval cache key depends on what changes the embeddings, nothing else."""

from __future__ import annotations

from ecglm.config import ExperimentConfig
from ecglm.config.loader import apply_overrides
from ecglm.retrieval.build import encoder_build_args, encoder_key


def _key(**overrides):
    cfg = apply_overrides(ExperimentConfig(), overrides)
    return encoder_key(cfg, encoder_build_args(cfg))


def test_other_encoders_sections_do_not_change_the_key() -> None:
    base = _key()
    assert _key(**{"encoder.image.image_size": 224}) == base  # cmelt never reads image.*
    assert _key(**{"encoder.ts_transformer.patch_size": 25}) == base
    assert _key(**{"encoder.d_model": 384, "encoder.n_heads": 6}) != base
    assert _key(**{"data.fs": 250}) != base  # build arguments count


def test_selected_encoders_own_section_changes_the_key() -> None:
    dual = {"encoder.name": "dual", "mapper.name": "gem_projector"}
    assert _key(**dual, **{"encoder.image.image_size": 224}) != _key(**dual)
    assert _key(**dual, **{"encoder.temporal_conv.kernel": 3}) == _key(**dual)
