"""GEM's time-series encoder (``encoder.name: ts_transformer``, ECG-CoCa-style).

The ``(B, 12, T)`` signal in mV is cut into non-overlapping patches of ``patch_size`` samples
over all 12 leads (``12 * patch_size`` values each); each patch is linearly embedded to
``d_model``, given a learned position, refined by ``n_layers`` pre-norm transformer layers and a
final LayerNorm. Every patch is a token; the pooled embedding is their mean.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ecglm.config.schema import EncoderConfig
from ecglm.models.encoders.base import (
    N_LEADS,
    ECGEncoder,
    EncoderOutput,
    transformer_stack,
    ModelInputError,
    check_ecg_input,
)


class TSTransformerEncoder(ECGEncoder):
    """Patch-embedding transformer over 12-lead ECGs.

    Args:
        cfg: encoder section (``d_model``, ``n_layers``, ``n_heads``, ``dropout``,
            ``lead_mask_prob`` and ``ts_transformer.patch_size``/``max_patches``).

    ``forward(x)`` takes ``x: (B, 12, T)`` float mV and returns ``tokens (B, T // patch_size,
    d_model)`` and ``pooled (B, d_model)`` (mean over tokens). The last ``T % patch_size``
    samples are dropped. Raises :class:`ModelInputError` when ``T < patch_size`` or
    ``T // patch_size > max_patches``.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__(cfg.lead_mask_prob)
        self.cfg = cfg
        self.patch_size = cfg.ts_transformer.patch_size
        self.max_patches = cfg.ts_transformer.max_patches
        self.embed = nn.Linear(N_LEADS * self.patch_size, cfg.d_model)
        self.positions = nn.Parameter(torch.zeros(self.max_patches, cfg.d_model))
        nn.init.normal_(self.positions, std=0.02)
        self.dropout = nn.Dropout(cfg.dropout)
        self.transformer = transformer_stack(cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.dropout)
        self.out_norm = nn.LayerNorm(cfg.d_model)

    @property
    def out_dim(self) -> int:
        """Width of ``pooled`` and ``tokens`` (``d_model``)."""
        return self.cfg.d_model

    def n_patches(self, n_samples: int) -> int:
        """Tokens produced for ``n_samples`` samples: ``n_samples // patch_size``."""
        return n_samples // self.patch_size

    def patchify(self, x: Tensor) -> Tensor:
        """``(B, 12, T) -> (B, T // P, 12 * P)``: patch ``i`` holds samples ``[i P, (i+1) P)``
        of every lead, lead-major (lead 0's ``P`` samples, then lead 1's, ...)."""
        batch, leads, _ = x.shape
        n = self.n_patches(x.shape[2])
        patches = x[:, :, : n * self.patch_size].reshape(batch, leads, n, self.patch_size)
        return patches.permute(0, 2, 1, 3).reshape(batch, n, leads * self.patch_size)

    def forward(self, x: Tensor) -> EncoderOutput:
        """Encode ``x: (B, 12, T)`` mV into tokens ``(B, T // P, d)`` and pooled ``(B, d)``."""
        check_ecg_input(x, self.patch_size)
        n = self.n_patches(x.shape[2])
        if n > self.max_patches:
            raise ModelInputError(
                f"encoder input x: T={x.shape[2]} gives {n} patches of "
                f"{self.patch_size} samples, more than encoder.ts_transformer.max_patches="
                f"{self.max_patches}")
        x = self._mask_leads(x.to(self.embed.weight.dtype))
        tokens = self.embed(self.patchify(x)) + self.positions[:n]  # (B, n, d)
        tokens = self.out_norm(self.transformer(self.dropout(tokens)))
        return EncoderOutput(pooled=tokens.mean(dim=1), tokens=tokens)
