"""SigLIP's pairwise sigmoid loss (Zhai et al. 2023, "Sigmoid Loss for Language Image
Pre-Training"), single-process and across Ray Train workers.

For ECG embeddings ``x`` (B, E) and text embeddings ``y`` (N, E), both L2-normalised::

    logits[i, j] = exp(t) * <x_i, y_j> + b
    labels[i, j] = +1 if text j is ECG i's own text else -1
    loss = -(1 / B) * sum_ij log sigmoid(labels[i, j] * logits[i, j])

i.e. every pair is an independent binary classification; the sum over pairs is divided by
the number of ECGs (rows), as in the paper. ``t`` (``logit_scale``, init log 10) and ``b``
(``logit_bias``, init -10) are learned.

Across workers (:func:`distributed_siglip_loss`): every worker all-gathers the text
embeddings of all workers with ``torch.distributed.nn.functional.all_gather``, which keeps the
autograd graph (its backward sums the gradients of every rank's loss into the owner's slice),
and scores its own B ECGs against all ``W * B`` texts. Each of the ``(W B)^2`` pairs is then
scored on exactly one worker, so the mean over workers of the local losses equals the loss of
one global batch of ``W * B`` pairs, and DDP's gradient average is that loss's gradient. Every
worker must hold the same B (the loop drops incomplete batches).
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.distributed.nn.functional import all_gather


def siglip_logits(x: Tensor, y: Tensor, logit_scale: Tensor, logit_bias: Tensor) -> Tensor:
    """``exp(t) * x @ y^T + b``: ``(B, E), (N, E) -> (B, N)``."""
    return logit_scale.exp() * (x @ y.t()) + logit_bias


def siglip_loss(x: Tensor, y: Tensor, logit_scale: Tensor, logit_bias: Tensor,
                pos_offset: int = 0) -> Tensor:
    """Sigmoid loss of ECG rows ``x`` (B, E) against texts ``y`` (N, E), ``N >= B``.

    Args:
        pos_offset: the text of ECG ``i`` is ``y[pos_offset + i]`` (0 for a local batch; the
            worker's offset in the gathered texts otherwise).

    Returns:
        Scalar: ``-sum over the B x N pairs of log sigmoid(label * logit) / B``.
    """
    b, n = x.shape[0], y.shape[0]
    if pos_offset < 0 or pos_offset + b > n:
        raise ValueError(f"siglip_loss: positives y[{pos_offset}:{pos_offset + b}] outside the "
                         f"{n} texts")
    logits = siglip_logits(x, y, logit_scale, logit_bias)
    labels = -torch.ones_like(logits)
    idx = torch.arange(b, device=x.device)
    labels[idx, idx + pos_offset] = 1.0
    return -F.logsigmoid(labels * logits).sum() / b


def gather_with_grad(t: Tensor) -> Tensor:
    """Concatenate ``t`` (B, ...) of every rank in rank order -> ``(W * B, ...)``, keeping the
    gradient path (identity when torch.distributed is not initialised)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    with warnings.catch_warnings():
        # torch 2.13 marks it deprecated in favour of the private _functional_collectives;
        # it is still the public autograd-aware all-gather (open_clip's gather_with_grad)
        warnings.filterwarnings("ignore", category=FutureWarning,
                                message=".*all_gather is deprecated.*")
        return torch.cat(all_gather(t), dim=0)


def distributed_siglip_loss(x: Tensor, y: Tensor, logit_scale: Tensor,
                            logit_bias: Tensor) -> Tensor:
    """This worker's share of the global SigLIP loss (see the module docstring): local ECGs
    ``x`` (B, E) against the gathered texts of all workers; equals :func:`siglip_loss` of
    the local batch when not distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return siglip_loss(x, y, logit_scale, logit_bias)
    return siglip_loss(x, gather_with_grad(y), logit_scale, logit_bias,
                       pos_offset=dist.get_rank() * x.shape[0])


@torch.no_grad()
def chunked_siglip_loss(x: Tensor, y: Tensor, logit_scale: Tensor, logit_bias: Tensor,
                        chunk: int) -> float:
    """Evaluation loss over paired embeddings ``x``, ``y`` (N, E): :func:`siglip_loss` of
    consecutive chunks of ``chunk`` pairs (the training global batch size), averaged with
    weights = chunk sizes. A trailing chunk of a single pair is merged into the previous one
    (one pair has no negatives). Deterministic for a fixed order; NaN when ``N < 2``."""
    n = x.shape[0]
    if n < 2:
        return float("nan")
    bounds = list(range(0, n, max(chunk, 2))) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < 2:
        bounds.pop(-2)
    total = 0.0
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        total += float(siglip_loss(x[lo:hi], y[lo:hi], logit_scale, logit_bias)) * (hi - lo)
    return total / n
