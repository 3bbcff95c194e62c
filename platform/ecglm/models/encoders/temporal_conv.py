"""MEIT's 1-D temporal convolution ECG encoder (``encoder.name: temporal_conv``).

Conv blocks ``Conv1d (same padding) -> BatchNorm1d -> ReLU -> AvgPool1d(pool)`` over the
``(B, 12, T)`` signal in mV, one block per entry of ``encoder.temporal_conv.channels``; a global
average over time gives ``(B, C_last)``, and a CLIP-style non-linear projection
``Linear -> BatchNorm1d -> ReLU -> Linear -> BatchNorm1d`` (hidden width ``proj_hidden``) maps it
to ``out_dim`` -- by default the LLM's attention head dimension, so that the ``head_tile`` mapper
can replicate it once per head (MEIT's concatenated fusion).
"""

from __future__ import annotations

from torch import Tensor, nn

from ecglm.config.schema import ConfigError, TemporalConvConfig
from ecglm.models.encoders.base import (
    N_LEADS,
    ECGEncoder,
    EncoderOutput,
    ModelInputError,
    check_ecg_input,
)


def resolve_out_dim(cfg: TemporalConvConfig, llm_head_dim: int | None) -> int:
    """``cfg.out_dim`` when set, else the LLM head dimension.

    Raises:
        ConfigError: both are ``None`` (names ``encoder.temporal_conv.out_dim``) or not > 0.
    """
    width = cfg.out_dim if cfg.out_dim is not None else llm_head_dim
    if width is None:
        raise ConfigError("encoder.temporal_conv.out_dim: null means 'the LLM head dimension', "
                          "but no llm_head_dim was given to build_encoder; set an int")
    if width <= 0:
        raise ConfigError(f"encoder.temporal_conv.out_dim: must be > 0, got {width}")
    return int(width)


class TemporalConvBlock(nn.Module):
    """``Conv1d -> BatchNorm1d -> ReLU -> AvgPool1d``: ``(B, C_in, T) -> (B, C_out, T // pool)``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, pool: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel_size=kernel, padding="same")
        self.norm = nn.BatchNorm1d(c_out)
        self.act = nn.ReLU()
        self.pool = nn.AvgPool1d(pool)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.act(self.norm(self.conv(x))))


class TemporalConvEncoder(ECGEncoder):
    """MEIT encoder: temporal conv blocks, global average, 2-layer projection.

    Args:
        cfg: ``encoder.temporal_conv`` section.
        out_dim: output width (see :func:`resolve_out_dim`).
        lead_mask_prob: training-time probability of zeroing each lead.

    ``forward(x)`` takes ``x: (B, 12, T)`` float mV (``T >= pool ** len(channels)``) and returns
    ``pooled (B, out_dim)`` and ``tokens = pooled.unsqueeze(1)`` ``(B, 1, out_dim)``: MEIT
    hands the LLM one embedding per ECG, so the token sequence is that single vector.

    The projection's BatchNorm1d normalises over the batch, so training mode needs ``B >= 2``
    (:class:`ModelInputError` otherwise); eval mode uses the running statistics, any ``B``.
    """

    def __init__(self, cfg: TemporalConvConfig, out_dim: int, lead_mask_prob: float = 0.0) -> None:
        super().__init__(lead_mask_prob)
        self.cfg = cfg
        self._out_dim = out_dim
        blocks: list[nn.Module] = []
        c_in = N_LEADS
        for c_out in cfg.channels:
            blocks.append(TemporalConvBlock(c_in, c_out, cfg.kernel, cfg.pool))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.projection = nn.Sequential(
            nn.Linear(c_in, cfg.proj_hidden), nn.BatchNorm1d(cfg.proj_hidden), nn.ReLU(),
            nn.Linear(cfg.proj_hidden, out_dim), nn.BatchNorm1d(out_dim))

    @property
    def out_dim(self) -> int:
        """Width of ``pooled``/``tokens`` (the LLM head dimension by default)."""
        return self._out_dim

    def min_samples(self) -> int:
        """Smallest ``T`` that leaves one time step after every pooling: ``pool ** n_blocks``."""
        return int(self.cfg.pool ** len(self.cfg.channels))

    def forward(self, x: Tensor) -> EncoderOutput:
        """Encode ``x: (B, 12, T)`` mV into ``pooled (B, out_dim)``, ``tokens (B, 1, out_dim)``."""
        check_ecg_input(x, self.min_samples())
        if self.training and x.shape[0] < 2:
            raise ModelInputError(f"encoder input x: temporal_conv's BatchNorm1d projection "
                                  f"needs a batch of B >= 2 in training mode, got B={x.shape[0]}")
        first = self.projection[0]
        assert isinstance(first, nn.Linear)
        x = self._mask_leads(x.to(first.weight.dtype))
        feats = self.features(x)  # (B, C_last, T')
        pooled = self.projection(feats.mean(dim=2))  # (B, out_dim)
        return EncoderOutput(pooled=pooled, tokens=pooled.unsqueeze(1))
