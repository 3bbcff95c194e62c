"""Trainable state of a model: what a checkpoint holds.

The trainable tensors are every ``requires_grad`` parameter (encoder if trainable, mapper,
LoRA; never a frozen vision tower or the frozen LLM) plus the persistent buffers of trained
ECG-side modules (batch-norm running statistics), keyed by module path, so the keys depend on
the config only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ecglm.models.encoders import CheckpointError
from ecglm.models.front_end import is_trained


def trained_buffers(model: nn.Module, components: tuple[str, ...]) -> dict[str, Tensor]:
    """Persistent buffers of trained modules inside ``model.<component>`` for each name in
    ``components`` (absent components are skipped), keyed by module path."""
    out: dict[str, Tensor] = {}
    for name in components:
        component = getattr(model, name, None)
        if component is None:
            continue
        for mod_name, module in component.named_modules():
            if not is_trained(module, component):
                continue
            skip = getattr(module, "_non_persistent_buffers_set", set())
            for buf_name, buf in module.named_buffers(recurse=False):
                if buf is not None and buf_name not in skip:
                    key = ".".join(p for p in (name, mod_name, buf_name) if p)
                    out[key] = buf
    return out


def trainable_tensors(model: nn.Module, components: tuple[str, ...]) -> dict[str, Tensor]:
    """Live trainable tensors of ``model`` (parameters that require grad + trained buffers of
    ``components``), keyed by module path."""
    tensors: dict[str, Tensor] = {name: p for name, p in model.named_parameters()
                                  if p.requires_grad}
    tensors.update(trained_buffers(model, components))
    return tensors


def load_into(tensors: dict[str, Tensor], state: dict[str, Tensor]) -> None:
    """Copy ``state`` into the live ``tensors``; keys and shapes must match exactly.

    Raises:
        CheckpointError: missing/unexpected keys or shape mismatch (names them).
    """
    missing = sorted(set(tensors) - set(state))
    unexpected = sorted(set(state) - set(tensors))
    if missing or unexpected:
        raise CheckpointError(f"trainable state: missing keys {missing[:5]} "
                              f"({len(missing)}), unexpected keys {unexpected[:5]} "
                              f"({len(unexpected)})")
    with torch.no_grad():
        for name, tensor in tensors.items():
            value = state[name]
            if tuple(value.shape) != tuple(tensor.shape):
                raise CheckpointError(f"trainable state: {name}: expected shape "
                                      f"{tuple(tensor.shape)}, got {tuple(value.shape)}")
            tensor.copy_(value.to(device=tensor.device, dtype=tensor.dtype))
