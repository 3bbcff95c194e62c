"""GEM's projector (``mapper.name: gem_projector``) for the ``dual`` encoder.

An ``mlp2x_gelu`` (``MLP_ts``) maps the time-series tokens to the image feature width; then ONE
shared projector (``mapper.projector``: ``linear`` or ``mlpNx_gelu``) maps the sequence
``[ts tokens, image tokens]`` to the LLM width.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ecglm.config.schema import ConfigError, MapperConfig
from ecglm.models.encoders.base import EncoderOutput, ModelInputError
from ecglm.models.mappers.mlp import build_mlp, check_tokens, mlp_depth, pool_tokens

TS_MLP_DEPTH = 2
"""GEM's MLP_ts is a 2-layer GELU MLP."""


class GEMProjector(nn.Module):
    """Time-series + image tokens -> ``(B, L_ts + N_img, d_llm)``.

    Args:
        cfg: mapper section (``n_tokens``: time-series tokens after pooling, 0 keeps all;
            ``projector``: the shared projector).
        ts_dim: time-series token width (``encoder.out_dim``).
        image_dim: image token width (``encoder.image_dim``).
        d_llm: LLM hidden size.

    ``forward(enc)`` reads ``enc.tokens (B, L, ts_dim)`` and ``enc.image_tokens
    (B, N, image_dim)`` (:class:`ModelInputError` when missing) and returns
    ``projector(cat([ts_mlp(pool(tokens)), image_tokens], dim=1))``.
    """

    def __init__(self, cfg: MapperConfig, ts_dim: int, image_dim: int, d_llm: int) -> None:
        super().__init__()
        if ts_dim <= 0 or image_dim <= 0 or d_llm <= 0:
            raise ConfigError(f"mapper: gem_projector needs positive widths, got ts {ts_dim}, "
                              f"image {image_dim}, llm {d_llm}")
        self.cfg = cfg
        self.ts_dim = ts_dim
        self.image_dim = image_dim
        self.out_dim = d_llm
        self.ts_mlp = build_mlp(TS_MLP_DEPTH, ts_dim, image_dim)
        self.projector = build_mlp(mlp_depth(cfg.projector, "mapper.projector"), image_dim, d_llm)

    def forward(self, enc: EncoderOutput) -> Tensor:
        """``tokens (B, L, ts_dim)``, ``image_tokens (B, N, image_dim)`` ->
        ``(B, (n_tokens or L) + N, d_llm)``: time-series positions first."""
        ts = check_tokens(enc.tokens, self.ts_dim, "tokens")
        img = check_tokens(enc.image_tokens, self.image_dim,
                           "image_tokens (gem_projector needs encoder.name: dual)")
        if img.shape[0] != ts.shape[0]:
            raise ModelInputError(f"mapper input image_tokens: batch {img.shape[0]} != tokens "
                                  f"batch {ts.shape[0]}")
        ts = self.ts_mlp(pool_tokens(ts, self.cfg.n_tokens))  # (B, L', image_dim)
        return self.projector(torch.cat([ts, img.to(ts.dtype)], dim=1))
