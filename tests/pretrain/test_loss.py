"""SigLIP loss: hand-written reference, matched vs shuffled pairs, gradients, eval chunks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ecglm.pretrain.loss import chunked_siglip_loss, distributed_siglip_loss, siglip_loss


def _reference(x: torch.Tensor, y: torch.Tensor, t: float, b: float, offset: int = 0) -> float:
    """Zhai et al. 2023 written out pair by pair: -1/B sum_ij log sigmoid(z_ij (e^t x.y + b))."""
    total = 0.0
    for i in range(x.shape[0]):
        for j in range(y.shape[0]):
            z = 1.0 if j == i + offset else -1.0
            logit = math.exp(t) * float(x[i] @ y[j]) + b
            total += math.log(1.0 / (1.0 + math.exp(-z * logit)))
    return -total / x.shape[0]


def _unit(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def test_matches_pairwise_reference() -> None:
    x, y = _unit(6, 8, seed=0), _unit(6, 8, seed=1)
    t, b = torch.tensor(math.log(10.0), dtype=torch.float64), torch.tensor(-3.0,
                                                                          dtype=torch.float64)
    assert float(siglip_loss(x, y, t, b)) == pytest.approx(_reference(x, y, math.log(10.0), -3.0),
                                                           rel=1e-10)


def test_offset_into_gathered_texts_matches_reference() -> None:
    """A worker's rows against all workers' texts: positives at its offset."""
    x, y = _unit(3, 8, seed=2), _unit(9, 8, seed=3)
    t, b = torch.tensor(1.0, dtype=torch.float64), torch.tensor(-2.0, dtype=torch.float64)
    got = float(siglip_loss(x, y, t, b, pos_offset=3))
    assert got == pytest.approx(_reference(x, y, 1.0, -2.0, offset=3), rel=1e-10)
    with pytest.raises(ValueError, match="outside"):
        siglip_loss(x, y, t, b, pos_offset=7)


def test_not_distributed_equals_local_loss() -> None:
    x, y = _unit(4, 8, seed=4), _unit(4, 8, seed=5)
    t, b = torch.tensor(2.3, dtype=torch.float64), torch.tensor(-10.0, dtype=torch.float64)
    assert float(distributed_siglip_loss(x, y, t, b)) == float(siglip_loss(x, y, t, b))


def test_matched_pairs_score_lower_than_shuffled() -> None:
    y = _unit(16, 32, seed=6)
    x = F.normalize(y + 0.1 * _unit(16, 32, seed=7), dim=-1)  # each ECG close to its text
    t, b = torch.tensor(math.log(10.0), dtype=torch.float64), torch.tensor(-5.0,
                                                                          dtype=torch.float64)
    perm = torch.roll(torch.arange(16), 1)
    assert float(siglip_loss(x, y, t, b)) < float(siglip_loss(x, y[perm], t, b)) - 1.0


def test_gradient_reaches_scale_and_bias() -> None:
    x, y = _unit(5, 8, seed=8).float(), _unit(5, 8, seed=9).float()
    t = torch.nn.Parameter(torch.tensor(math.log(10.0)))
    b = torch.nn.Parameter(torch.tensor(-10.0))
    siglip_loss(x, y, t, b).backward()
    assert t.grad is not None and b.grad is not None
    assert float(t.grad.abs()) > 0 and float(b.grad.abs()) > 0
    # with b = -10 every pair looks negative: raising b must lower the loss (positives pull)
    assert float(b.grad) < 0


def test_chunked_eval_loss() -> None:
    x, y = _unit(10, 8, seed=10), _unit(10, 8, seed=11)
    t, b = torch.tensor(1.0, dtype=torch.float64), torch.tensor(-1.0, dtype=torch.float64)
    whole = float(siglip_loss(x, y, t, b))
    assert chunked_siglip_loss(x, y, t, b, chunk=10) == pytest.approx(whole)
    assert chunked_siglip_loss(x, y, t, b, chunk=100) == pytest.approx(whole)
    # 10 = 3 + 3 + 4 (a trailing single pair joins the previous chunk)
    parts = [(0, 3), (3, 6), (6, 10)]
    expected = sum(float(siglip_loss(x[lo:hi], y[lo:hi], t, b)) * (hi - lo)
                   for lo, hi in parts) / 10
    assert chunked_siglip_loss(x, y, t, b, chunk=3) == pytest.approx(expected)
    assert math.isnan(chunked_siglip_loss(x[:1], y[:1], t, b, chunk=4))
