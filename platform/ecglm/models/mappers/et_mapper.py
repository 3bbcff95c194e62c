"""ET-Mapper: ECG encoder output -> LLM prefix tokens.

Main path: ``Linear(pooled)`` expands the pooled ECG embedding into ``n_tokens`` vectors of the
LLM width, refined by a small transformer. Lead-aware skip path: a ``Conv1d`` over the encoder's
token sequence, pooled to ``n_tokens`` positions and projected by a ``Linear``; both paths are
added element-wise.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ecglm.config.schema import ConfigError, MapperConfig
from ecglm.models.encoders.base import EncoderOutput, ModelInputError


class ETMapper(nn.Module):
    """Map :class:`EncoderOutput` to ``(B, n_tokens, out_dim)`` prefix embeddings.

    Args:
        cfg: mapper section of the config.
        in_dim: encoder width ``d_model``.
        out_dim: LLM hidden size (``d_llm``); must be divisible by ``cfg.n_heads``.

    Raises:
        ConfigError: ``mapper.n_heads`` does not divide ``out_dim``.
    """

    def __init__(self, cfg: MapperConfig, in_dim: int, out_dim: int) -> None:
        super().__init__()
        if in_dim <= 0 or out_dim <= 0:
            raise ConfigError(f"mapper: in_dim and out_dim must be > 0, got {in_dim}, {out_dim}")
        if cfg.n_layers > 0 and out_dim % cfg.n_heads != 0:
            raise ConfigError(f"mapper.n_heads: must divide the LLM hidden size {out_dim}, "
                              f"got {cfg.n_heads}")
        self.cfg = cfg
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.expand = nn.Linear(in_dim, cfg.n_tokens * out_dim)
        self.slot_embed = nn.Parameter(torch.zeros(cfg.n_tokens, out_dim))
        nn.init.normal_(self.slot_embed, std=0.02)
        if cfg.n_layers > 0:
            layer = nn.TransformerEncoderLayer(
                d_model=out_dim, nhead=cfg.n_heads, dim_feedforward=4 * out_dim,
                dropout=cfg.dropout, activation="gelu", batch_first=True, norm_first=True)
            self.refine: nn.Module = nn.TransformerEncoder(
                layer, num_layers=cfg.n_layers, enable_nested_tensor=False)
        else:
            self.refine = nn.Identity()
        if cfg.lead_skip:
            self.skip_conv: nn.Module | None = nn.Conv1d(in_dim, in_dim, kernel_size=3, padding=1)
            self.skip_act: nn.Module | None = nn.GELU()
            self.skip_pool: nn.Module | None = nn.AdaptiveAvgPool1d(cfg.n_tokens)
            self.skip_proj: nn.Module | None = nn.Linear(in_dim, out_dim)
        else:
            self.skip_conv = self.skip_act = self.skip_pool = self.skip_proj = None

    @property
    def n_tokens(self) -> int:
        """Prefix tokens per ECG."""
        return self.cfg.n_tokens

    def forward(self, enc: EncoderOutput) -> Tensor:
        """``pooled (B, in_dim)``, ``tokens (B, L, in_dim)`` -> ``(B, n_tokens, out_dim)``."""
        pooled, tokens = enc.pooled, enc.tokens
        if pooled.ndim != 2 or pooled.shape[1] != self.in_dim:
            raise ModelInputError(f"mapper input pooled: expected shape (B, {self.in_dim}), "
                                  f"got {tuple(pooled.shape)}")
        batch = pooled.shape[0]
        main = self.expand(pooled).view(batch, self.cfg.n_tokens, self.out_dim) + self.slot_embed
        main = self.refine(main)
        if self.skip_conv is None:
            return main
        if tokens.ndim != 3 or tokens.shape[0] != batch or tokens.shape[2] != self.in_dim:
            raise ModelInputError(f"mapper input tokens: expected shape ({batch}, L, "
                                  f"{self.in_dim}), got {tuple(tokens.shape)}")
        assert self.skip_act is not None and self.skip_pool is not None
        assert self.skip_proj is not None
        skip = self.skip_act(self.skip_conv(tokens.transpose(1, 2)))  # (B, in_dim, L)
        skip = self.skip_pool(skip).transpose(1, 2)  # (B, n_tokens, in_dim)
        return main + self.skip_proj(skip)
