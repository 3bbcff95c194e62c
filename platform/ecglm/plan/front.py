"""The ECG side of a plan: encoder + mapper parameters, prefix tokens and activations.

Encoders differ too much for one closed form, so the front end is built for real on the CPU
at its configured size (:func:`ecglm.models.front_end.build_front_end`; a hub vision tower is
counted on the meta device and replaced by a one-layer stand-in of its width, see
:mod:`ecglm.models.encoders.sizing`) and one training-mode forward of two ECGs is traced:
the bytes autograd saves for backward (:func:`saved_tensor_bytes`) are the front end's
activations per ECG, which scale linearly with the number of ECGs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import Tensor, nn

from ecglm.config.schema import ExperimentConfig
from ecglm.models.dims import LLMDims
from ecglm.models.encoders import encoder_spec
from ecglm.models.encoders.sizing import count
from ecglm.models.front_end import ECGFrontEnd
from ecglm.models.mappers import build_mapper
from ecglm.plan.arch import LLMArch

ECG_SLOTS = {"qa": 2}
"""ECG slots per example by task (ECG-QA comparison questions carry two ECGs; the other
tasks one). The planner sizes for the largest."""


@dataclass(frozen=True)
class FrontEndSize:
    """Numbers of the ECG side.

    Attributes:
        total: encoder + mapper parameters.
        trainable: those with ``requires_grad``.
        tokens_per_ecg: prefix tokens one ECG becomes (``n``).
        act_bytes_per_ecg: bytes saved for backward by one ECG's forward, fp32.
    """

    total: int
    trainable: int
    tokens_per_ecg: int
    act_bytes_per_ecg: int


def saved_tensor_bytes(fn: Callable[[], object], exclude: nn.Module | None = None) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``fn()`` runs
    (parameters of ``exclude`` are not counted: they are model state, not activations).

    Tensors that share a storage (views) count once.
    """
    params = {p.untyped_storage().data_ptr() for p in exclude.parameters()} if exclude else set()
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in params:
            seen[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def llm_dims(arch: LLMArch) -> LLMDims:
    """:class:`~ecglm.models.dims.LLMDims` of an architecture (what the front end sizes to)."""
    return LLMDims(hidden_size=arch.hidden_size, n_heads=arch.n_heads,
                   n_kv_heads=arch.n_kv_heads, head_dim=arch.head_dim,
                   n_layers=arch.n_layers, model_type="llama")


def front_end_size(cfg: ExperimentConfig, arch: LLMArch) -> FrontEndSize:
    """Build the configured front end for ``arch`` (seeded, checkpoint not read), count it,
    and trace two ECGs of ``data.fs * data.seconds`` samples through it in training mode."""
    dims = llm_dims(arch)
    enc_cfg = replace(cfg.encoder, checkpoint=None)  # planning reads no weights
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "frozen at random init": irrelevant to sizes
        torch.manual_seed(cfg.seed)
        encoder, (enc_total, enc_train) = encoder_spec(enc_cfg.name).count_full_size(
            enc_cfg, float(cfg.data.fs), dims.head_dim, cfg.llm.cache_dir)
        mapper = build_mapper(cfg.mapper, encoder, dims.hidden_size, llm_n_heads=dims.n_heads)
        front = ECGFrontEnd(encoder, mapper, dims.hidden_size)
        front.train()
        n_samples = int(round(cfg.data.fs * cfg.data.seconds))
        signals = torch.zeros(2, 1, 12, n_samples)  # 2: batch norm needs B >= 2 to train
        out: dict[str, Tensor] = {}

        def forward() -> None:
            out["prefix"] = front(signals)[0]

        act = saved_tensor_bytes(forward, exclude=front)
    map_total, map_train = count(mapper)
    return FrontEndSize(total=enc_total + map_total, trainable=enc_train + map_train,
                        tokens_per_ecg=int(out["prefix"].shape[1]), act_bytes_per_ecg=act // 2)
