"""MEIT's parameter-free mapper (``mapper.name: head_tile``).

The pooled ECG embedding has the width of one LLM attention head; it is repeated once per head
into a single ``d_llm`` token, so that after a layer's head split every head sees the same ECG
vector (MEIT's concatenated fusion through the layer's own key/value projections).
"""

from __future__ import annotations

from torch import Tensor, nn

from ecglm.config.schema import ConfigError
from ecglm.models.encoders.base import EncoderOutput, ModelInputError


class HeadTile(nn.Module):
    """``pooled (B, head_dim)`` -> ``(B, 1, n_heads * head_dim)``, no parameters.

    Args:
        head_dim: encoder output width (``encoder.out_dim``).
        n_heads: the LLM's attention heads.
        d_llm: LLM hidden size; must equal ``head_dim * n_heads``.

    Raises:
        ConfigError: ``n_heads`` missing or ``head_dim * n_heads != d_llm``.
    """

    def __init__(self, head_dim: int, n_heads: int | None, d_llm: int) -> None:
        super().__init__()
        if n_heads is None or n_heads <= 0:
            raise ConfigError("mapper.name: head_tile needs the LLM's number of attention heads "
                              f"(build_mapper(..., llm_n_heads=...)), got {n_heads}")
        if head_dim * n_heads != d_llm:
            raise ConfigError(f"mapper.name: head_tile needs encoder width x LLM heads == LLM "
                              f"hidden size, got {head_dim} x {n_heads} != {d_llm} (set "
                              f"encoder.temporal_conv.out_dim: null for the LLM head dimension)")
        self.head_dim = head_dim
        self.n_heads = n_heads
        self.out_dim = d_llm

    def forward(self, enc: EncoderOutput) -> Tensor:
        """``enc.pooled (B, head_dim)`` -> ``(B, 1, d_llm)``; slice ``[h*hd:(h+1)*hd]`` of the
        token equals ``pooled`` for every head ``h``."""
        pooled = enc.pooled
        if pooled.ndim != 2 or pooled.shape[1] != self.head_dim:
            raise ModelInputError(f"mapper input pooled: expected shape (B, {self.head_dim}), "
                                  f"got {tuple(pooled.shape)}")
        return pooled.repeat(1, self.n_heads).unsqueeze(1)
