"""The two towers of SigLIP pretraining and their learned logit scale and bias.

* :class:`ECGTower`: ``(B, 12, T)`` mV -> ECG encoder (``cfg.encoder``) -> pooled ``(B, D)`` ->
  ``Linear(D, E)`` -> L2-normalised ``(B, E)``. In training mode each lead of each ECG is
  zeroed with probability ``pretrain.lead_mask_prob`` first
  (:func:`ecglm.models.encoders.mask_leads`; the encoder's own ``lead_mask_prob`` is switched
  off inside the tower so leads are not masked twice).
* :class:`TextTower`: text features ``(B, H)`` (cached from a frozen backbone) or raw texts
  (through a trainable backbone) -> ``Linear(H, E)`` -> L2-normalised ``(B, E)``.
* :class:`SigLIPModel`: both towers, ``logit_scale`` ``t`` (logits are scaled by ``exp(t)``)
  and ``logit_bias`` ``b``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ecglm.config.schema import ConfigError, ExperimentConfig
from ecglm.models.encoders import build_encoder, mask_leads, time_series_part
from ecglm.pretrain.text import TextBackbone

PRETRAIN_ENCODERS: tuple[str, ...] = ("cmelt", "ts_transformer")
"""``encoder.name`` values that pretraining supports (time-series encoders with a pooled
output of width ``encoder.d_model``)."""

TextInput = Tensor | Sequence[str]
"""Text side of a batch: ``(B, H)`` cached features, or ``B`` strings for a trainable
backbone."""


def check_pretrain_config(cfg: ExperimentConfig) -> None:
    """Raise :class:`ConfigError` naming the key when ``cfg`` cannot be pretrained."""
    if cfg.encoder.name not in PRETRAIN_ENCODERS:
        raise ConfigError(f"encoder.name: pretraining needs a time-series encoder "
                          f"{list(PRETRAIN_ENCODERS)}, got {cfg.encoder.name!r}")


class ECGTower(nn.Module):
    """ECG encoder + projection to the shared space (see the module docstring)."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__()
        check_pretrain_config(cfg)
        enc_cfg = dataclasses.replace(cfg.encoder, lead_mask_prob=0.0, trainable=True)
        self.encoder = build_encoder(enc_cfg, fs=float(cfg.data.fs),
                                     cache_dir=cfg.llm.cache_dir)
        self.proj = nn.Linear(self.encoder.out_dim, cfg.pretrain.embed_dim)
        self.lead_mask_prob = cfg.pretrain.lead_mask_prob

    def augment(self, x: Tensor) -> Tensor:
        """Lead masking: in training mode each lead of each ECG ``(B, 12, T)`` is zeroed with
        probability ``pretrain.lead_mask_prob``; in eval mode ``x`` is returned unchanged."""
        return mask_leads(x, self.lead_mask_prob) if self.training else x

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``(B, 12, T)`` mV -> unit-norm ``(B, E)``; leads masked in training mode."""
        return F.normalize(self.proj(self.encoder(self.augment(x)).pooled), dim=-1)


class TextTower(nn.Module):
    """Optional trainable backbone + projection (see the module docstring).

    Args:
        in_dim: feature width ``H`` of the backbone.
        embed_dim: shared space width ``E``.
        backbone: the trainable backbone; ``None`` when features are cached (frozen backbone).
    """

    def __init__(self, in_dim: int, embed_dim: int,
                 backbone: Optional[TextBackbone] = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.proj = nn.Linear(in_dim, embed_dim)

    def forward(self, text: TextInput) -> Tensor:
        """Features ``(B, H)`` or ``B`` strings -> unit-norm ``(B, E)``."""
        if isinstance(text, Tensor):
            feats = text.to(self.proj.weight.device, self.proj.weight.dtype)
        elif self.backbone is None:
            raise TypeError("TextTower: got strings but the tower has no backbone "
                            "(frozen text encoder: pass cached features)")
        else:
            feats = self.backbone(list(text))
        return F.normalize(self.proj(feats), dim=-1)


class SigLIPModel(nn.Module):
    """ECG tower, text tower, ``logit_scale`` ``t`` and ``logit_bias`` ``b`` (scalars).

    ``forward(ecg, text)`` returns ``(z_ecg (B, E), z_text (B, E), t, b)`` so that the loss
    (computed outside, after gathering across workers) uses parameters seen by DDP's forward.
    """

    def __init__(self, cfg: ExperimentConfig, text_dim: int,
                 text_backbone: Optional[TextBackbone] = None) -> None:
        super().__init__()
        self.ecg = ECGTower(cfg)
        self.text = TextTower(text_dim, cfg.pretrain.embed_dim, text_backbone)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.pretrain.init_logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(cfg.pretrain.init_logit_bias)))

    def forward(self, ecg: Tensor, text: TextInput) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.ecg(ecg), self.text(text), self.logit_scale, self.logit_bias

    def encoder_state_dict(self) -> dict[str, Tensor]:
        """The ECG encoder's time-series weights (what ``encoder.checkpoint`` loads), on CPU."""
        part = time_series_part(self.ecg.encoder)
        if part is None:  # excluded by check_pretrain_config
            raise ConfigError("encoder.name: the encoder has no time-series weights")
        return {k: v.detach().cpu().contiguous() for k, v in part.state_dict().items()}


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on matrices/kernels; none on biases, norms and the scalar
    logit scale/bias (ndim < 2). Frozen parameters are left out."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]
