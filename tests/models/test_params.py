"""Parameter counts: full-size presets on the meta device, tiny ones built for real."""

from __future__ import annotations

from pathlib import Path

from ecglm.config import load_config
from ecglm.models.params import REFERENCE_CONFIGS, full_size_counts, human, model_counts

REPO = Path(__file__).resolve().parents[2]


def test_meit_full_size_counts_match_the_architecture_by_hand() -> None:
    cfg = load_config(REPO / "jobs/configs/meit_reports.yaml")
    c = full_size_counts(cfg)
    ref = REFERENCE_CONFIGS[str(cfg.llm.path)]
    h, f, n = ref["hidden_size"], ref["intermediate_size"], ref["num_hidden_layers"]
    kv = ref["num_key_value_heads"] * ref["head_dim"]
    r = cfg.lora.r
    per_layer = r * ((h + h) * 2 + (h + kv) * 2 + (h + f) * 2 + (f + h))  # q,o / k,v / gate,up / down
    assert c.lora == (n * per_layer, n * per_layer)  # all-linear LoRA, all trainable
    assert 8.0e9 < c.llm[0] < 8.1e9 and c.llm[1] == 0  # Llama-3-8B, frozen
    assert c.mapper == (0, 0)  # head_tile: no new parameters
    assert c.encoder[0] == c.encoder[1] > 0


def test_gem_counts_the_full_clip_tower_frozen() -> None:
    c = full_size_counts(load_config(REPO / "jobs/configs/gem_grounding.yaml"))
    assert c.encoder[1] == 0 and 3.8e8 < c.encoder[0] < 4.0e8  # CLIP-L/14-336 + ts transformer
    assert c.mapper[0] == c.mapper[1] > 0


def test_tiny_counts_add_up(make_cfg) -> None:
    from ecglm.models.ecg_lm import build_ecg_lm

    model = build_ecg_lm(make_cfg())
    c = model_counts(model)
    assert c.total == sum(p.numel() for p in model.parameters())
    assert c.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert human(1_234_567) == "1.23M" and human(999) == "999"
