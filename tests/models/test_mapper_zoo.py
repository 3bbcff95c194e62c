"""The mapper zoo: et_mapper, linear / mlpNx_gelu, gem_projector, head_tile behind build_mapper."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from ecglm.config.schema import (
    ConfigError,
    EncoderConfig,
    ImageEncoderConfig,
    MapperConfig,
    TinyVisionConfig,
    TSTransformerConfig,
)
from ecglm.models.encoders import ECGEncoder, EncoderOutput, ModelInputError, build_encoder
from ecglm.models.mappers import (
    ETMapper,
    GEMProjector,
    HeadTile,
    TokenMLPMapper,
    build_mapper,
    mlp_depth,
    pool_tokens,
)

D_LLM = 48


class _Widths(ECGEncoder):
    """Stand-in encoder that only reports its widths (the mappers read nothing else)."""

    def __init__(self, out_dim: int, image_dim: int | None = None) -> None:
        super().__init__()
        self._out, self._img = out_dim, image_dim

    @property
    def out_dim(self) -> int:
        return self._out

    @property
    def image_dim(self) -> int | None:
        return self._img


def _enc_out(batch: int = 2, n_tok: int = 6, dim: int = 16, n_img: int | None = None,
             img_dim: int = 24, seed: int = 0) -> EncoderOutput:
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, n_tok, dim, generator=gen)
    image = None if n_img is None else torch.randn(batch, n_img, img_dim, generator=gen)
    return EncoderOutput(pooled=tokens.mean(dim=1), tokens=tokens, image_tokens=image)


def _mapper(name: str, enc: ECGEncoder, **kw: object) -> nn.Module:
    torch.manual_seed(0)
    cfg = MapperConfig(name=name, **{"n_layers": 1, "n_heads": 2, "dropout": 0.0, **kw})
    return build_mapper(cfg, enc, D_LLM, llm_n_heads=4)


@pytest.mark.parametrize("name,kw,widths,expected", [
    ("et_mapper", {"n_tokens": 12}, (16, None), (2, 12, D_LLM)),
    ("linear", {"n_tokens": 3}, (16, None), (2, 3, D_LLM)),
    ("linear", {"n_tokens": 0}, (16, None), (2, 6, D_LLM)),
    ("mlp2x_gelu", {"n_tokens": 4}, (16, None), (2, 4, D_LLM)),
    ("mlp3x_gelu", {"n_tokens": 0}, (16, None), (2, 6, D_LLM)),
    ("gem_projector", {"n_tokens": 0}, (16, 24), (2, 6 + 5, D_LLM)),
    ("gem_projector", {"n_tokens": 2, "projector": "linear"}, (16, 24), (2, 2 + 5, D_LLM)),
    ("head_tile", {"n_tokens": 1}, (12, None), (2, 1, D_LLM)),
])
def test_shapes_and_gradients(name: str, kw: dict, widths: tuple, expected: tuple) -> None:
    mapper = _mapper(name, _Widths(*widths), **kw)
    enc = _enc_out(dim=widths[0], n_img=5 if widths[1] else None)
    enc.tokens.requires_grad_(True)
    out = mapper(EncoderOutput(enc.tokens.mean(dim=1), enc.tokens, enc.image_tokens))
    assert out.shape == expected
    out.square().sum().backward()
    assert enc.tokens.grad is not None and float(enc.tokens.grad.abs().sum()) > 0
    for pname, param in mapper.named_parameters():
        assert param.grad is not None and float(param.grad.abs().sum()) > 0, pname


def test_registry_picks_the_classes() -> None:
    enc = _Widths(16, 24)
    assert isinstance(_mapper("et_mapper", enc), ETMapper)
    assert isinstance(_mapper("linear", enc), TokenMLPMapper)
    assert isinstance(_mapper("mlp2x_gelu", enc), TokenMLPMapper)
    assert isinstance(_mapper("gem_projector", enc), GEMProjector)
    assert isinstance(_mapper("head_tile", _Widths(12)), HeadTile)


def test_mlp_depth_counts_linear_layers() -> None:
    assert mlp_depth("linear") == 1 and mlp_depth("mlp3x_gelu") == 3
    for name, n_linear in (("linear", 1), ("mlp1x_gelu", 1), ("mlp2x_gelu", 2),
                           ("mlp3x_gelu", 3)):
        mapper = _mapper(name, _Widths(16), n_tokens=0)
        layers = list(mapper.modules())
        assert sum(isinstance(m, nn.Linear) for m in layers) == n_linear
        assert sum(isinstance(m, nn.GELU) for m in layers) == n_linear - 1
        linears = [m for m in layers if isinstance(m, nn.Linear)]
        assert (linears[0].in_features, linears[-1].out_features) == (16, D_LLM)
    with pytest.raises(ConfigError, match="mapper.projector"):
        mlp_depth("mlp0x_relu", "mapper.projector")


def test_token_pooling() -> None:
    enc = _enc_out(n_tok=6)
    pooled = pool_tokens(enc.tokens, 3)
    torch.testing.assert_close(pooled[:, 1], enc.tokens[:, 2:4].mean(dim=1))
    assert pool_tokens(enc.tokens, 0) is enc.tokens
    mapper = _mapper("mlp2x_gelu", _Widths(16), n_tokens=3)
    assert isinstance(mapper, TokenMLPMapper)
    torch.testing.assert_close(mapper(enc), mapper.mlp(pooled))
    keep_all = _mapper("mlp2x_gelu", _Widths(16), n_tokens=0)
    assert isinstance(keep_all, TokenMLPMapper)
    out = keep_all(enc)
    # per-token: each output token depends on its own encoder token only
    torch.testing.assert_close(out[:, 4], keep_all.mlp(enc.tokens[:, 4]))


def test_head_tile_is_parameter_free_repetition() -> None:
    mapper = _mapper("head_tile", _Widths(12))
    assert sum(p.numel() for p in mapper.parameters()) == 0
    pooled = torch.randn(3, 12)
    out = mapper(EncoderOutput(pooled=pooled, tokens=pooled.unsqueeze(1)))
    assert out.shape == (3, 1, D_LLM)
    for head in range(4):
        torch.testing.assert_close(out[:, 0, head * 12:(head + 1) * 12], pooled)
    with pytest.raises(ConfigError, match="head_tile"):
        build_mapper(MapperConfig(name="head_tile", n_tokens=1), _Widths(16), D_LLM,
                     llm_n_heads=4)
    with pytest.raises(ConfigError, match="attention heads"):
        build_mapper(MapperConfig(name="head_tile", n_tokens=1), _Widths(12), D_LLM)
    with pytest.raises(ModelInputError, match="pooled"):
        mapper(EncoderOutput(pooled=torch.zeros(3, 16), tokens=torch.zeros(3, 1, 16)))


def test_gem_projector_shares_one_projector_across_streams() -> None:
    mapper = _mapper("gem_projector", _Widths(16, 24), n_tokens=0)
    assert isinstance(mapper, GEMProjector)
    enc = _enc_out(n_tok=6, n_img=5)
    assert enc.image_tokens is not None
    base = mapper(enc)
    # image positions are the shared projector applied to the image tokens
    torch.testing.assert_close(base[:, 6:], mapper.projector(enc.image_tokens))
    torch.testing.assert_close(base[:, :6], mapper.projector(mapper.ts_mlp(enc.tokens)))
    with torch.no_grad():
        mapper.projector[0].weight.add_(0.1)
    moved = mapper(enc)
    assert not torch.allclose(moved[:, :6], base[:, :6], atol=1e-4)
    assert not torch.allclose(moved[:, 6:], base[:, 6:], atol=1e-4)
    with torch.no_grad():
        mapper.projector[0].weight.sub_(0.1)
        mapper.ts_mlp[0].weight.add_(0.1)
    ts_only = mapper(enc)
    assert not torch.allclose(ts_only[:, :6], base[:, :6], atol=1e-4)
    torch.testing.assert_close(ts_only[:, 6:], base[:, 6:])
    linears = [m for m in mapper.ts_mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 24), (24, 24)]


def test_gem_projector_needs_image_tokens() -> None:
    mapper = _mapper("gem_projector", _Widths(16, 24))
    with pytest.raises(ModelInputError, match="image_tokens"):
        mapper(_enc_out(n_img=None))
    with pytest.raises(ConfigError, match="gem_projector"):
        _mapper("gem_projector", _Widths(16))
    with pytest.raises(ConfigError, match="expected an ECG encoder"):
        build_mapper(MapperConfig(name="gem_projector"), 16, D_LLM)  # a bare width is refused


def test_token_mapper_rejects_wrong_width() -> None:
    mapper = _mapper("linear", _Widths(16))
    with pytest.raises(ModelInputError, match=r"tokens: expected shape \(B, L, 16\)"):
        mapper(_enc_out(dim=8))


def test_gem_projector_on_a_real_dual_encoder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = EncoderConfig(
        name="dual", d_model=16, n_layers=1, n_heads=2, dropout=0.0,
        ts_transformer=TSTransformerConfig(patch_size=50, max_patches=16),
        image=ImageEncoderConfig(source="tiny", image_size=64,
                                 tiny=TinyVisionConfig(hidden_size=24, n_layers=1, n_heads=2,
                                                       intermediate_size=48, patch_size=32)))
    enc = build_encoder(cfg, fs=100.0, cache_dir=str(tmp_path)).eval()
    mapper = build_mapper(MapperConfig(name="gem_projector", n_tokens=4), enc, D_LLM)
    out = mapper(enc(torch.randn(2, 12, 500)))
    assert out.shape == (2, 4 + 4, D_LLM)  # 4 pooled ts tokens + (64 / 32)^2 image patches
