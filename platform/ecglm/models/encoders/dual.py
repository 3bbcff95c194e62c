"""GEM's dual encoder (``encoder.name: dual``): time series + rendered image.

A :class:`~ecglm.models.encoders.ts_transformer.TSTransformerEncoder` encodes the signal into
patch tokens and an :class:`~ecglm.models.encoders.image.ImageEncoder` encodes its paper-style
rendering. The ``gem_projector`` mapper maps both streams into the LLM.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from ecglm.config.schema import EncoderConfig
from ecglm.models.encoders.base import ECGEncoder, EncoderOutput, check_ecg_input
from ecglm.models.encoders.image import ImageEncoder
from ecglm.models.encoders.ts_transformer import TSTransformerEncoder


class DualEncoder(ECGEncoder):
    """Time-series transformer (``self.ts``) + image tower (``self.image``).

    Args:
        cfg: encoder section (``ts_transformer`` sizes and ``image``).
        fs: sampling rate of the input ECGs in Hz (renderer).
        cache_dir: where a tiny image tower is written.

    ``forward(x)`` takes ``x: (B, 12, T)`` float mV and returns ``pooled (B, d_model)`` and
    ``tokens (B, T // patch_size, d_model)`` of the time-series part, and
    ``image_tokens (B, N, D_img)`` of the image tower. Lead masking applies to the time-series
    part only (the image shows the unmasked ECG). ``time_series`` is ``self.ts``: what
    ``encoder.trainable`` freezes and ``encoder.checkpoint`` loads (a ``ts_transformer``
    checkpoint); the image tower follows ``encoder.image.trainable``.
    """

    def __init__(self, cfg: EncoderConfig, fs: float = 500.0,
                 cache_dir: str | Path = ".cache/models") -> None:
        super().__init__(0.0)  # masking happens inside self.ts (encoder.lead_mask_prob)
        self.ts = TSTransformerEncoder(cfg)
        self.image = ImageEncoder(cfg.image, fs=fs, cache_dir=cache_dir)

    @property
    def out_dim(self) -> int:
        """Width of ``pooled``/``tokens`` (``encoder.d_model``)."""
        return self.ts.out_dim

    @property
    def image_dim(self) -> int | None:
        """Width of ``image_tokens`` (the vision tower's hidden size)."""
        return self.image.out_dim

    @property
    def time_series(self) -> nn.Module | None:
        """The time-series transformer."""
        return self.ts

    def forward(self, x: Tensor) -> EncoderOutput:
        """``x: (B, 12, T)`` mV -> ts ``pooled``/``tokens`` + ``image_tokens``."""
        check_ecg_input(x)
        ts = self.ts(x)
        img = self.image(x)
        return EncoderOutput(pooled=ts.pooled, tokens=ts.tokens, image_tokens=img.tokens)
