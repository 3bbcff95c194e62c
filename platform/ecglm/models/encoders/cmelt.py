"""C-MELT-style 12-lead ECG encoder.

A strided 1-D convolutional feature extractor turns a ``(B, 12, T)`` signal in millivolts into a
sequence of ``L`` feature tokens (``L`` shrinks by the product of the conv strides), which is
projected to ``d_model``, given sinusoidal positions and refined by a transformer encoder. The
pooled embedding is the mean over tokens.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ecglm.config.schema import EncoderConfig
from ecglm.models.encoders.base import (N_LEADS, ECGEncoder, EncoderOutput, check_ecg_input,
                                        transformer_stack)


def _group_count(channels: int, max_groups: int = 32) -> int:
    """Largest number of GroupNorm groups ``<= max_groups`` that divides ``channels``."""
    return math.gcd(channels, max_groups)


def sinusoidal_positions(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Fixed sine/cosine position table ``(length, dim)`` (Vaswani et al.); any ``length``."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    half = (dim + 1) // 2
    freq = torch.exp(torch.arange(half, device=device, dtype=torch.float32)
                     * (-math.log(10000.0) / max(half, 1)))
    angles = position * freq.unsqueeze(0)  # (length, half)
    table = torch.zeros(length, 2 * half, device=device, dtype=torch.float32)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table[:, :dim].to(dtype)


class ConvBlock(nn.Module):
    """``Conv1d -> GELU -> GroupNorm`` over the time axis: ``(B, C_in, T) -> (B, C_out, T')``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel_size=kernel, stride=stride)
        self.act = nn.GELU()
        self.norm = nn.GroupNorm(_group_count(c_out), c_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.act(self.conv(x)))


class CMELTEncoder(ECGEncoder):
    """Conv feature extractor + transformer over 12-lead ECGs.

    Args:
        cfg: encoder section of the experiment config.

    ``forward(x)`` takes ``x: (B, 12, T)`` float in mV and returns :class:`EncoderOutput` with
    ``tokens (B, L, d_model)`` and ``pooled (B, d_model)``. In training mode each lead of each
    ECG is zeroed with probability ``cfg.lead_mask_prob`` (lead masking augmentation).
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__(cfg.lead_mask_prob)
        self.cfg = cfg
        blocks: list[nn.Module] = []
        c_in = N_LEADS
        for c_out, kernel, stride in zip(cfg.conv_channels, cfg.conv_kernels, cfg.conv_strides):
            blocks.append(ConvBlock(c_in, c_out, kernel, stride))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.proj = nn.Linear(c_in, cfg.d_model)
        self.proj_norm = nn.LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.transformer = transformer_stack(cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.dropout)
        self.out_norm = nn.LayerNorm(cfg.d_model)

    @property
    def d_model(self) -> int:
        """Width of the output tokens."""
        return self.cfg.d_model

    @property
    def out_dim(self) -> int:
        """Width of ``pooled`` and ``tokens`` (``d_model``)."""
        return self.cfg.d_model

    def min_samples(self) -> int:
        """Smallest ``T`` that leaves at least one token after the conv stack."""
        need = 1
        for kernel, stride in reversed(list(zip(self.cfg.conv_kernels, self.cfg.conv_strides))):
            need = (need - 1) * stride + kernel
        return need

    def conv_output_length(self, n_samples: int) -> int:
        """Number of tokens ``L`` produced for ``n_samples`` input samples."""
        length = n_samples
        for kernel, stride in zip(self.cfg.conv_kernels, self.cfg.conv_strides):
            length = (length - kernel) // stride + 1
        return length

    def forward(self, x: Tensor) -> EncoderOutput:
        """Encode ``x: (B, 12, T)`` mV into tokens ``(B, L, d)`` and pooled ``(B, d)``."""
        check_ecg_input(x, self.min_samples())
        x = self._mask_leads(x.to(self.proj.weight.dtype))
        feats = self.features(x)  # (B, C, L)
        tokens = self.proj_norm(self.proj(feats.transpose(1, 2)))  # (B, L, d)
        tokens = tokens + sinusoidal_positions(tokens.shape[1], tokens.shape[2],
                                               tokens.device, tokens.dtype)
        tokens = self.out_norm(self.transformer(self.dropout(tokens)))
        return EncoderOutput(pooled=tokens.mean(dim=1), tokens=tokens)
