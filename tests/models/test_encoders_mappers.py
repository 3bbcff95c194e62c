"""CMELTEncoder and ETMapper behaviour."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ecglm.config.schema import ConfigError, EncoderConfig, MapperConfig
from ecglm.models import (
    CheckpointError,
    CMELTEncoder,
    EncoderOutput,
    ModelInputError,
    build_encoder,
    build_mapper,
)


def _enc_cfg(**kw: object) -> EncoderConfig:
    base = dict(d_model=32, n_layers=2, n_heads=2, conv_channels=[16, 16], conv_kernels=[10, 5],
                conv_strides=[5, 5])
    base.update(kw)
    return EncoderConfig(**base)  # type: ignore[arg-type]


def _signals(batch: int = 3, n_samples: int = 500, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 12, n_samples, generator=torch.Generator().manual_seed(seed))


def test_encoder_shapes_and_mean_pooling() -> None:
    torch.manual_seed(0)
    enc = CMELTEncoder(_enc_cfg()).eval()
    x = _signals(3, 1000)
    out = enc(x)
    assert isinstance(out, EncoderOutput)
    n_tokens = enc.conv_output_length(1000)
    assert n_tokens == ((1000 - 10) // 5 + 1 - 5) // 5 + 1
    assert out.tokens.shape == (3, n_tokens, 32)
    assert out.pooled.shape == (3, 32)
    torch.testing.assert_close(out.pooled, out.tokens.mean(dim=1))


def test_encoder_is_per_sample_and_uses_the_signal() -> None:
    torch.manual_seed(0)
    enc = CMELTEncoder(_enc_cfg()).eval()
    x = _signals(3)
    both = enc(x).pooled
    alone = enc(x[1:2]).pooled
    torch.testing.assert_close(both[1:2], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(both[0], both[1], atol=1e-3)


def test_encoder_rejects_bad_shapes() -> None:
    enc = CMELTEncoder(_enc_cfg())
    with pytest.raises(ModelInputError, match=r"\(B, 12, T\)"):
        enc(torch.zeros(2, 8, 500))
    with pytest.raises(ModelInputError, match="T >= 30"):
        enc(torch.zeros(2, 12, enc.min_samples() - 1))
    assert enc.conv_output_length(enc.min_samples()) == 1


def test_lead_masking_only_in_training() -> None:
    torch.manual_seed(0)
    enc = CMELTEncoder(_enc_cfg(lead_mask_prob=0.5))
    x = _signals(8) + 3.0  # no lead is zero by itself
    enc.train()
    masked = enc._mask_leads(x)
    lead_zero = (masked == 0).all(dim=2)
    lead_same = (masked == x).all(dim=2)
    assert bool((lead_zero | lead_same).all()), "whole leads are either kept or zeroed"
    assert 0 < int(lead_zero.sum()) < lead_zero.numel()
    enc.eval()
    assert torch.equal(enc._mask_leads(x), x)
    first, second = enc(x).pooled, enc(x).pooled
    torch.testing.assert_close(first, second)


def test_build_encoder_freezes_and_loads_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = CMELTEncoder(_enc_cfg()).eval()
    ckpt = tmp_path / "enc.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(ckpt))

    torch.manual_seed(2)
    loaded = build_encoder(_enc_cfg(checkpoint=str(ckpt), trainable=False)).eval()
    assert not any(p.requires_grad for p in loaded.parameters())
    x = _signals(2)
    torch.testing.assert_close(loaded(x).pooled, source(x).pooled)

    assert all(p.requires_grad for p in build_encoder(_enc_cfg()).parameters())
    with pytest.raises(CheckpointError, match="file not found"):
        build_encoder(_enc_cfg(checkpoint=str(tmp_path / "missing.safetensors")))
    with pytest.raises(CheckpointError, match="does not fit"):
        build_encoder(_enc_cfg(checkpoint=str(ckpt), d_model=64, n_heads=2))


def test_mapper_shapes_and_both_paths_matter() -> None:
    torch.manual_seed(0)
    enc = CMELTEncoder(_enc_cfg()).eval()
    mapper = build_mapper(MapperConfig(n_tokens=12, n_layers=1, n_heads=2, dropout=0.0), enc, 64)
    out = enc(_signals(2))
    mapped = mapper(out)
    assert mapped.shape == (2, 12, 64)
    # the lead skip path reads the token sequence: same pooled, different tokens -> different
    shuffled = EncoderOutput(pooled=out.pooled, tokens=out.tokens.flip(1))
    assert not torch.allclose(mapper(shuffled), mapped, atol=1e-4)
    # without the skip path only the pooled vector matters
    no_skip = build_mapper(MapperConfig(n_tokens=12, n_layers=1, n_heads=2, lead_skip=False,
                                        dropout=0.0), enc, 64)
    torch.testing.assert_close(no_skip(shuffled), no_skip(out))
    assert not any("skip" in name for name, _ in no_skip.named_parameters())


def test_mapper_heads_must_divide_llm_width() -> None:
    enc = CMELTEncoder(_enc_cfg())
    with pytest.raises(ConfigError, match="mapper.n_heads"):
        build_mapper(MapperConfig(n_heads=4), enc, 66)
    with pytest.raises(ModelInputError, match="pooled"):
        build_mapper(MapperConfig(n_heads=2), enc, 64)(
            EncoderOutput(pooled=torch.zeros(2, 16), tokens=torch.zeros(2, 5, 16)))
