"""The retrieval cache key depends on what changes the embeddings, the index kind and its build
parameters and the neighbour table, nothing else."""

from __future__ import annotations

from ecglm.config import ExperimentConfig
from ecglm.config.loader import apply_overrides
from ecglm.retrieval.build import artifact_key, encoder_build_args, encoder_key, index_key


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


def _artifact_key(**overrides):
    cfg = apply_overrides(ExperimentConfig(), overrides)
    return artifact_key(cfg, "shards", encoder_build_args(cfg))


def test_index_kind_and_build_params_change_the_artifact_key() -> None:
    base = _artifact_key()
    ivf = _artifact_key(**{"retrieval.index": "ivf"})
    hnsw = _artifact_key(**{"retrieval.index": "hnsw"})
    assert len({base, ivf, hnsw}) == 3
    assert _artifact_key(**{"retrieval.index": "ivf", "retrieval.nlist": 64}) != ivf
    assert _artifact_key(**{"retrieval.index": "hnsw", "retrieval.hnsw_m": 16}) != hnsw
    assert _artifact_key(**{"retrieval.index": "hnsw", "retrieval.ef_construction": 40}) != hnsw
    assert _artifact_key(**{"retrieval.top_k": 5}) != base  # the neighbour table changes


def test_query_time_and_unread_params_keep_the_artifact_key() -> None:
    ivf = {"retrieval.index": "ivf"}
    hnsw = {"retrieval.index": "hnsw"}
    assert _artifact_key(**ivf, **{"retrieval.nprobe": 64}) == _artifact_key(**ivf)
    assert _artifact_key(**hnsw, **{"retrieval.ef_search": 16}) == _artifact_key(**hnsw)
    assert _artifact_key(**{"retrieval.nlist": 64}) == _artifact_key()  # flat reads no nlist
    assert _artifact_key(**ivf, **{"retrieval.hnsw_m": 8}) == _artifact_key(**ivf)
    assert _artifact_key(**{"retrieval.use_gpu": False}) == _artifact_key()
    assert _artifact_key(**{"retrieval.max_report_chars": 50}) == _artifact_key()
    assert index_key(ExperimentConfig().retrieval) == {
        "top_k": 3, "exclude_same_patient": True, "index": "flat"}
