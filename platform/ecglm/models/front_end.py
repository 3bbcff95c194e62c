"""The ECG front end: encoder + mapper as one module that turns ECGs into an LLM prefix.

It needs only numbers from the LLM (:class:`~ecglm.models.dims.LLMDims`: width, head dim,
heads), never the LLM itself, so it is built, saved and loaded without it
(:func:`save_front_end`, :func:`load_front_end`): a Serve encoder replica holds this and
nothing else.

Saved folder::

    front_end.json          format version, the encoder/mapper config sections, data.fs,
                            the LLM numbers and the cache folder (tiny vision tower)
    front_end.safetensors   full state dict (parameters and buffers: batch-norm statistics),
                            keys ``encoder.*`` / ``mapper.*``
    vision/                 image/dual encoders with a tower from ``encoder.image.path`` only:
                            the tower (``save_pretrained``) and its pixel mean/std, so loading
                            needs neither the LLM nor the original tower folder (a tiny tower is
                            rebuilt under the saved cache folder, then overwritten by the
                            weights)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ecglm.config.loader import build_section, to_dict
from ecglm.config.schema import EncoderConfig, MapperConfig
from ecglm.models.dims import LLMDims
from ecglm.models.encoders import (
    N_LEADS,
    CheckpointError,
    ImageEncoder,
    ModelInputError,
    build_encoder,
)
from ecglm.models.mappers import build_mapper

FRONT_END_VERSION = 1
FRONT_END_CONFIG = "front_end.json"
FRONT_END_WEIGHTS = "front_end.safetensors"
VISION_DIR = "vision"
COMPONENTS = ("encoder", "mapper")
"""Sub-modules of the front end (their trained buffers are checkpointed with the weights)."""


@dataclass(frozen=True)
class FrontEndSpec:
    """Everything that determines a front end's architecture: config sections and numbers.

    Attributes:
        encoder: ``encoder`` config section.
        mapper: ``mapper`` config section.
        fs: sampling rate of the ECGs, Hz (``data.fs``).
        dims: the LLM's geometry (``hidden_size`` = prefix width, ``head_dim``, ``n_heads``).
        cache_dir: cache folder of the tiny vision tower (``llm.cache_dir``).
    """

    encoder: EncoderConfig
    mapper: MapperConfig
    fs: float
    dims: LLMDims
    cache_dir: str


def is_trained(module: nn.Module, component: nn.Module) -> bool:
    """Whether ``module`` (inside ``component``) is trained: its own parameters require grad,
    or (a parameter-free module) some parameter of ``component`` does."""
    own = list(module.parameters(recurse=False))
    if own:
        return any(p.requires_grad for p in own)
    return any(p.requires_grad for p in component.parameters())


class ECGFrontEnd(nn.Module):
    """Encoder + mapper: ``signals (B, E, 12, T)`` mV -> ``prefix (B, E * n, d_llm)``.

    Args:
        encoder: an ECG encoder (:func:`~ecglm.models.encoders.build_encoder`).
        mapper: its mapper, ``forward(encoder_output) -> (N, n, d_llm)``.
        d_llm: LLM width the mapper maps to.
        spec: what the front end was built from (needed by :func:`save_front_end`).
    """

    def __init__(self, encoder: nn.Module, mapper: nn.Module, d_llm: int,
                 spec: FrontEndSpec | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.mapper = mapper
        self.d_llm = int(d_llm)
        self.spec = spec

    def train(self, mode: bool = True) -> "ECGFrontEnd":
        """Like :meth:`nn.Module.train`, but batch-norm layers of frozen parts stay in eval
        mode, so their running statistics (not checkpointed) never change."""
        super().train(mode)
        if mode:
            for name in COMPONENTS:
                component = getattr(self, name)
                for module in component.modules():
                    if (isinstance(module, nn.modules.batchnorm._BatchNorm)
                            and not is_trained(module, component)):
                        module.eval()
        return self

    def forward(self, signals: Tensor, ecg_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Encode ECG slots into prefix vectors.

        Args:
            signals: ``(B, E, 12, T)`` float, mV.
            ecg_mask: ``(B, E)`` bool, True where the slot holds a real ECG (default: all).

        Returns:
            ``prefix (B, E * n, d_llm)`` in the mapper's dtype (zeros on masked slots),
            ``n`` = tokens per ECG returned by the mapper, and ``prefix_mask (B, E * n)`` bool.

        Raises:
            ModelInputError: wrong shapes.
        """
        if signals.ndim != 4 or signals.shape[2] != N_LEADS:
            raise ModelInputError(f"signals: expected shape (B, E, {N_LEADS}, T), "
                                  f"got {tuple(signals.shape)}")
        batch, n_ecg, _, n_samples = signals.shape
        if ecg_mask is None:
            ecg_mask = torch.ones(batch, n_ecg, dtype=torch.bool, device=signals.device)
        if tuple(ecg_mask.shape) != (batch, n_ecg):
            raise ModelInputError(f"ecg_mask: expected shape ({batch}, {n_ecg}), "
                                  f"got {tuple(ecg_mask.shape)}")
        valid = ecg_mask.to(device=signals.device, dtype=torch.bool).reshape(-1)
        flat = signals.reshape(batch * n_ecg, N_LEADS, n_samples)
        if bool(valid.all()) or not bool(valid.any()):
            tokens = self.mapper(self.encoder(flat))  # (B*E, n, d)
        else:
            # encode only real ECGs (per-sample ops: identical result, less compute)
            mapped = self.mapper(self.encoder(flat[valid]))
            tokens = mapped.new_zeros(batch * n_ecg, *mapped.shape[1:])
            tokens[valid] = mapped
        if tokens.ndim != 3 or tokens.shape[2] != self.d_llm:
            raise ModelInputError(f"mapper output: expected shape (N, n, {self.d_llm}), "
                                  f"got {tuple(tokens.shape)}")
        per_ecg = tokens.shape[1]
        tokens = tokens * valid.to(tokens.dtype)[:, None, None]
        prefix = tokens.reshape(batch, n_ecg * per_ecg, self.d_llm)
        prefix_mask = valid.reshape(batch, n_ecg).repeat_interleave(per_ecg, dim=1)
        return prefix, prefix_mask


def build_front_end(spec: FrontEndSpec, *, pretrained: bool = True) -> ECGFrontEnd:
    """Build encoder + mapper from a :class:`FrontEndSpec` (uses the global torch RNG; the
    caller seeds it).

    Args:
        spec: config sections and numbers.
        pretrained: load ``encoder.checkpoint`` (False when saved weights follow).
    """
    encoder = build_encoder(spec.encoder, fs=spec.fs, llm_head_dim=spec.dims.head_dim,
                            cache_dir=spec.cache_dir, pretrained=pretrained)
    mapper = build_mapper(spec.mapper, encoder, spec.dims.hidden_size,
                          llm_n_heads=spec.dims.n_heads)
    return ECGFrontEnd(encoder, mapper, spec.dims.hidden_size, spec)


def find_image_encoder(encoder: nn.Module) -> tuple[str, ImageEncoder] | None:
    """``(module path within the encoder, "" for the encoder itself, image encoder)`` of an
    image/dual encoder's image stream, or None."""
    for name, module in encoder.named_modules():
        if isinstance(module, ImageEncoder):
            return name, module
    return None


def save_vision_tower(image: ImageEncoder, folder: str | Path) -> Path:
    """Write the vision tower (``save_pretrained``) and the pixel statistics it is normalised
    with (``preprocessor_config.json``) to ``folder``; loadable as ``encoder.image.path``."""
    out = Path(folder)
    image.tower.save_pretrained(str(out))
    (out / "preprocessor_config.json").write_text(json.dumps({
        "image_mean": image.pixel_mean.flatten().tolist(),
        "image_std": image.pixel_std.flatten().tolist(),
        "note": "pixel statistics the ecglm image encoder normalises with"}, indent=2))
    return out


def save_front_end(front_end: ECGFrontEnd, folder: str | Path) -> Path:
    """Write ``front_end`` (weights, buffers, spec) to ``folder``; loads without the LLM.

    Raises:
        ValueError: the front end was built without a spec.
    """
    if front_end.spec is None:
        raise ValueError("save_front_end: the front end has no FrontEndSpec (build it with "
                         "build_front_end)")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    spec = front_end.spec
    state = {k: v.detach().to("cpu").contiguous().clone()
             for k, v in front_end.state_dict().items()}
    save_file(state, str(out / FRONT_END_WEIGHTS),
              metadata={"format": "pt", "content": "ecglm-front-end"})
    found = find_image_encoder(front_end.encoder)
    vision = None
    if found is not None and spec.encoder.image.source == "path":
        vision = VISION_DIR
        save_vision_tower(found[1], out / VISION_DIR)
    (out / FRONT_END_CONFIG).write_text(json.dumps({
        "version": FRONT_END_VERSION, "encoder": to_dict(spec.encoder),
        "mapper": to_dict(spec.mapper), "fs": spec.fs, "llm": dataclasses.asdict(spec.dims),
        "cache_dir": spec.cache_dir, "vision": vision}, indent=2))
    return out


def read_versioned_json(root: Path, name: str, version: int, what: str) -> dict:
    """The JSON manifest ``root/name`` of a saved ``what`` (front end, export) at ``version``.

    Raises:
        CheckpointError: the file is missing, or written by another format version.
    """
    path = root / name
    if not path.is_file():
        raise CheckpointError(f"{root}: no {name} (not an ecglm {what} folder)")
    meta = json.loads(path.read_text())
    if meta.get("version") != version:
        raise CheckpointError(f"{path}: {what} version {meta.get('version')!r}, this code "
                              f"reads version {version}")
    return meta


def load_front_end(folder: str | Path) -> ECGFrontEnd:
    """Load a folder written by :func:`save_front_end` (eval mode; trainable flags as built).

    Raises:
        CheckpointError: not a front-end folder, another format version, or weights that do
            not fit the saved spec.
    """
    root = Path(folder)
    meta = read_versioned_json(root, FRONT_END_CONFIG, FRONT_END_VERSION, "front-end")
    encoder = build_section(EncoderConfig, meta["encoder"], "encoder")
    if meta.get("vision"):  # the tower saved next to the weights, wherever the folder lives
        encoder = dataclasses.replace(encoder, image=dataclasses.replace(
            encoder.image, path=str(root / str(meta["vision"]))))
    spec = FrontEndSpec(encoder=encoder,
                        mapper=build_section(MapperConfig, meta["mapper"], "mapper"),
                        fs=float(meta["fs"]), dims=LLMDims(**meta["llm"]),
                        cache_dir=str(meta["cache_dir"]))
    with torch.random.fork_rng(devices=[]):  # initial weights are overwritten below
        front_end = build_front_end(spec, pretrained=False)
    try:
        front_end.load_state_dict(load_file(str(root / FRONT_END_WEIGHTS)), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{root / FRONT_END_WEIGHTS}: weights do not fit the saved "
                              f"config: {exc}") from exc
    return front_end.eval()
