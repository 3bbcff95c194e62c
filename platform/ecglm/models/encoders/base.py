"""Shared parts of every ECG encoder: output type, errors, input checks, lead masking and
checkpoint loading.

Every encoder is an :class:`ECGEncoder`: ``forward(x)`` takes ``x: (B, 12, T)`` float in mV and
returns an :class:`EncoderOutput`; ``out_dim`` is the width of ``pooled``/``tokens`` and
``image_dim`` the width of ``image_tokens`` (``None`` unless the encoder has an image stream).
``time_series`` is the sub-module holding the time-series weights (what ``encoder.trainable``
freezes and ``encoder.checkpoint`` loads into), ``None`` for an image-only encoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Optional

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

N_LEADS = 12
"""Leads per ECG, in the canonical order of ``ecglm.data.records.LEADS``."""


class ModelInputError(ValueError):
    """A tensor handed to a model has the wrong shape, dtype or size.

    The message names the argument, the expected value and what was received.
    """


class CheckpointError(RuntimeError):
    """A weights file is missing or does not fit the module it is loaded into."""


class EncoderOutput(NamedTuple):
    """Encoder result (a NamedTuple, so DeepSpeed ZeRO-3 sees the tensors inside a module's
    output and registers its backward hooks on them; a dataclass would hide them).

    Attributes:
        pooled: ``(B, D)`` summary embedding, ``D = encoder.out_dim``.
        tokens: ``(B, L, D)`` per-position features (``L`` depends on the encoder and ``T``).
        image_tokens: ``(B, N, D_img)`` image patch tokens, ``D_img = encoder.image_dim``;
            only the ``dual`` encoder sets it, ``None`` otherwise.
    """

    pooled: Tensor
    tokens: Tensor
    image_tokens: Optional[Tensor] = None


def transformer_stack(d_model: int, n_heads: int, n_layers: int, dropout: float) -> nn.Module:
    """``n_layers`` pre-norm GELU transformer encoder layers (feed-forward ``4 * d_model``,
    batch first) over ``(B, L, d_model)``; ``nn.Identity`` when ``n_layers`` is 0."""
    if n_layers <= 0:
        return nn.Identity()
    layer = nn.TransformerEncoderLayer(
        d_model=d_model, nhead=n_heads, dim_feedforward=4 * d_model, dropout=dropout,
        activation="gelu", batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, num_layers=n_layers, enable_nested_tensor=False)


def check_ecg_input(x: Tensor, min_samples: int = 1) -> None:
    """Raise :class:`ModelInputError` unless ``x`` is ``(B, 12, T)`` with ``B >= 1`` and
    ``T >= min_samples``."""
    if x.ndim != 3 or x.shape[1] != N_LEADS or x.shape[0] < 1:
        raise ModelInputError(f"encoder input x: expected shape (B, {N_LEADS}, T), "
                              f"got {tuple(x.shape)}")
    if x.shape[2] < min_samples:
        raise ModelInputError(f"encoder input x: expected T >= {min_samples} samples "
                              f"for the configured encoder, got T={x.shape[2]}")


def mask_leads(x: Tensor, prob: float) -> Tensor:
    """Zero each lead of each ECG independently with probability ``prob``.

    Args:
        x: ``(B, 12, T)`` signal (mV).
        prob: probability in ``[0, 1)`` of zeroing one lead.

    Returns:
        ``(B, 12, T)``: every lead either unchanged or all zeros.
    """
    if prob <= 0.0:
        return x
    keep = torch.rand(x.shape[0], x.shape[1], 1, device=x.device) >= prob
    return x * keep.to(x.dtype)


class ECGEncoder(nn.Module):
    """Base class of the encoders: lead masking and the properties the builders rely on.

    Args:
        lead_mask_prob: training-time probability of zeroing each lead (0: off).
    """

    def __init__(self, lead_mask_prob: float = 0.0) -> None:
        super().__init__()
        self.lead_mask_prob = lead_mask_prob

    @property
    def out_dim(self) -> int:
        """Width ``D`` of ``pooled`` and ``tokens``."""
        raise NotImplementedError

    @property
    def image_dim(self) -> int | None:
        """Width of ``image_tokens`` (``None``: the encoder has no image stream)."""
        return None

    @property
    def time_series(self) -> nn.Module | None:
        """The module holding the time-series weights (default: the encoder itself)."""
        return self

    def _mask_leads(self, x: Tensor) -> Tensor:
        """Lead masking in training mode only: ``(B, 12, T) -> (B, 12, T)``."""
        if not self.training:
            return x
        return mask_leads(x, self.lead_mask_prob)

    def forward(self, x: Tensor) -> EncoderOutput:  # pragma: no cover - abstract
        raise NotImplementedError


def time_series_part(encoder: nn.Module) -> nn.Module | None:
    """The time-series sub-module of ``encoder`` (any other module: itself)."""
    return encoder.time_series if isinstance(encoder, ECGEncoder) else encoder


def load_encoder_checkpoint(encoder: nn.Module, path: str | Path) -> None:
    """Load time-series weights from a safetensors file (strict: every key must match).

    The file holds the state dict of the encoder's time-series part (:func:`time_series_part`):
    the whole encoder for ``cmelt``/``temporal_conv``/``ts_transformer``, the ``ts_transformer``
    inside ``dual`` (so a pretrained ``ts_transformer`` checkpoint loads into ``dual``).

    Raises:
        CheckpointError: the file is missing, the encoder has no time-series part, or the
            keys/shapes do not match.
    """
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"encoder.checkpoint: file not found: {file}")
    target = time_series_part(encoder)
    if target is None:
        raise CheckpointError(f"encoder.checkpoint: {type(encoder).__name__} has no "
                              f"time-series part to load {file} into")
    state = load_file(str(file))
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"encoder.checkpoint: {file} does not fit the configured "
                              f"encoder: {exc}") from exc
