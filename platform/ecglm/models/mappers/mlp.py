"""LLaVA-style token projectors (``mapper.name: linear`` / ``mlpNx_gelu``) and the helpers the
GEM projector shares: MLP construction and token-sequence pooling."""

from __future__ import annotations


import torch.nn.functional as F
from torch import Tensor, nn

from ecglm.config.schema import MLP_NAME, ConfigError, MapperConfig
from ecglm.models.encoders.base import EncoderOutput, ModelInputError



def mlp_depth(name: str, key: str = "mapper.name") -> int:
    """Number of Linear layers of a projector name: ``linear`` -> 1, ``mlpNx_gelu`` -> N.

    Raises:
        ConfigError: any other name (``key`` names the config field).
    """
    if name == "linear":
        return 1
    match = MLP_NAME.match(name)
    if match is None:
        raise ConfigError(f"{key}: expected linear or mlpNx_gelu (N >= 1), got {name!r}")
    return int(match.group(1))


def build_mlp(depth: int, in_dim: int, out_dim: int) -> nn.Sequential:
    """``depth`` Linear layers with GELU between: ``in_dim -> out_dim``, then
    ``out_dim -> out_dim`` (LLaVA's ``mlpNx_gelu``; ``depth=1`` is a single Linear)."""
    if depth < 1 or in_dim <= 0 or out_dim <= 0:
        raise ConfigError(f"mapper: projector needs depth >= 1 and positive widths, got "
                          f"depth={depth}, {in_dim} -> {out_dim}")
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
    for _ in range(depth - 1):
        layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
    return nn.Sequential(*layers)


def pool_tokens(tokens: Tensor, n_tokens: int) -> Tensor:
    """Adaptive average pooling of a token sequence: ``(B, L, D) -> (B, n_tokens, D)``.

    ``n_tokens == 0`` returns ``tokens`` unchanged. Window ``i`` averages tokens
    ``[floor(i L / n), ceil((i + 1) L / n))``; with ``L < n_tokens`` tokens are repeated.
    """
    if n_tokens == 0 or tokens.shape[1] == n_tokens:
        return tokens
    return F.adaptive_avg_pool1d(tokens.transpose(1, 2), n_tokens).transpose(1, 2)


def check_tokens(tokens: Tensor | None, width: int, name: str) -> Tensor:
    """Return ``tokens`` if it is ``(B, L, width)`` with ``L >= 1``, else raise
    :class:`ModelInputError` naming ``name``."""
    if tokens is None:
        raise ModelInputError(f"mapper input {name}: expected shape (B, L, {width}), got None")
    if tokens.ndim != 3 or tokens.shape[1] < 1 or tokens.shape[2] != width:
        raise ModelInputError(f"mapper input {name}: expected shape (B, L, {width}), "
                              f"got {tuple(tokens.shape)}")
    return tokens


class TokenMLPMapper(nn.Module):
    """``linear`` / ``mlpNx_gelu``: per-token MLP to the LLM width.

    Args:
        cfg: mapper section (``name`` gives the depth; ``n_tokens`` the output length,
            0 keeps every encoder token).
        in_dim: encoder token width (``encoder.out_dim``).
        d_llm: LLM hidden size.

    ``forward(enc)`` pools ``enc.tokens (B, L, in_dim)`` to ``n_tokens`` positions
    (:func:`pool_tokens`) and maps each: ``(B, n, d_llm)`` with ``n = n_tokens or L``.
    """

    def __init__(self, cfg: MapperConfig, in_dim: int, d_llm: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_dim = in_dim
        self.out_dim = d_llm
        self.mlp = build_mlp(mlp_depth(cfg.name), in_dim, d_llm)

    def forward(self, enc: EncoderOutput) -> Tensor:
        """``enc.tokens (B, L, in_dim)`` -> ``(B, n_tokens or L, d_llm)``."""
        tokens = check_tokens(enc.tokens, self.in_dim, "tokens")
        return self.mlp(pool_tokens(tokens, self.cfg.n_tokens))
