"""Towers: lead masking, shapes, unit norm, encoder weights, config checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ecglm.config import ConfigError, load_config
from ecglm.pretrain.model import ECGTower, SigLIPModel, TextTower, param_groups

REPO = Path(__file__).resolve().parents[2]


def _cfg(*overrides: str):
    return load_config(REPO / "jobs/configs/tiny.yaml",
                       ["pretrain.embed_dim=8", "pretrain.lead_mask_prob=0.65", *overrides])


def test_lead_masking_whole_leads_training_only() -> None:
    torch.manual_seed(0)
    tower = ECGTower(_cfg())
    x = torch.randn(400, 12, 50) + 5.0  # never zero by chance
    tower.train()
    masked = tower.augment(x)
    zero = (masked == 0).all(dim=2)  # (B, 12): lead entirely zero
    kept = (masked == x).all(dim=2)
    assert bool((zero | kept).all()), "a lead was partly masked"
    assert abs(float(zero.float().mean()) - 0.65) < 0.03  # 4800 draws: sd ~0.007
    assert zero.any(dim=0).all()  # every lead position gets masked sometimes
    tower.eval()
    assert torch.equal(tower.augment(x), x)


def test_lead_mask_prob_zero_keeps_input() -> None:
    tower = ECGTower(_cfg("pretrain.lead_mask_prob=0.0")).train()
    x = torch.randn(4, 12, 50)
    assert torch.equal(tower.augment(x), x)


def test_towers_give_unit_embeddings() -> None:
    torch.manual_seed(0)
    model = SigLIPModel(_cfg(), text_dim=6).eval()
    ze, zt, t, b = model(torch.randn(3, 12, 1000), torch.randn(3, 6))
    assert ze.shape == zt.shape == (3, 8)
    assert torch.allclose(ze.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(zt.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert float(t.detach()) == pytest.approx(2.302585)
    assert float(b.detach()) == pytest.approx(-10.0)


def test_text_tower_without_backbone_rejects_strings() -> None:
    with pytest.raises(TypeError, match="no backbone"):
        TextTower(6, 8)(["normal ECG"])


def test_encoder_state_dict_is_the_encoders() -> None:
    model = SigLIPModel(_cfg(), text_dim=6)
    state = model.encoder_state_dict()
    assert set(state) == set(model.ecg.encoder.state_dict())


def test_only_time_series_encoders() -> None:
    with pytest.raises(ConfigError, match="encoder.name"):
        ECGTower(_cfg("encoder.name=temporal_conv", "mapper.name=head_tile",
                      "fusion.name=kv_prefix"))


def test_no_weight_decay_on_scalars_and_biases() -> None:
    model = SigLIPModel(_cfg(), text_dim=6)
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in no_decay["params"]}
    assert id(model.logit_scale) in ids and id(model.logit_bias) in ids
    assert all(p.ndim >= 2 for p in decay["params"])
