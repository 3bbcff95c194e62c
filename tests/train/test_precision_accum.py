"""The DDP strategy's step logic without Ray: gradient accumulation equals one big batch,
bf16 autocast runs on CPU, fp16 is refused off CUDA (``train.precision``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ecglm.config import ConfigError
from ecglm.tasks import get_task
from ecglm.tasks.encode import train_batch
from ecglm.train.strategies import DDPStrategy, backward_micro_batches, trainable_parameters
from tests.helpers import tiny_config
from tests.train.test_overfit import _rows


def _strategy(root: Path, *overrides: str) -> DDPStrategy:
    cfg = tiny_config(root, *overrides)
    torch.manual_seed(cfg.seed)
    return DDPStrategy(cfg, distributed=False)


def _grads(strategy: DDPStrategy) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in strategy.module.named_parameters()
            if p.requires_grad and p.grad is not None}


def test_grad_accum_two_micro_batches_equal_one_batch_of_both(tmp_path: Path) -> None:
    one = _strategy(tmp_path, "train.grad_accum_steps=1")
    two = _strategy(tmp_path, "train.grad_accum_steps=2")
    task, tok, cfg = get_task(one.module.cfg.task), one.module.tokenizer, one.module.cfg
    rows = _rows(cfg)  # 4 rows with answers of different lengths
    big = [train_batch(task, rows, tok, cfg, None)]
    small = min(([train_batch(task, [rows[0], rows[k]], tok, cfg, None),
                  train_batch(task, [r for j, r in enumerate(rows) if j not in (0, k)], tok, cfg,
                              None)] for k in (1, 2, 3)),
                key=lambda bs: -abs(int((bs[0]["labels"] != -100).sum())
                                    - int((bs[1]["labels"] != -100).sum())))
    n_tok = [int((b["labels"] != -100).sum()) for b in small]
    assert n_tok[0] != n_tok[1], "the check needs micro-batches of unequal answer lengths"
    for s in (one, two):  # dropout off (the mapper's 0.1): same arithmetic, no random masks
        s.module.eval()
    loss_one = backward_micro_batches(one, big)
    loss_two = backward_micro_batches(two, small)
    assert loss_two == pytest.approx(loss_one, rel=1e-5)
    g1, g2 = _grads(one), _grads(two)
    assert set(g1) == set(g2) and len(g1) > 0
    for name in g1:
        torch.testing.assert_close(g2[name], g1[name], rtol=1e-4, atol=1e-6, msg=name)
    # one optimizer step each: the schedule advanced once, gradients cleared
    for s in (one, two):
        s.optimizer_step()
        assert s.scheduler.last_epoch == 1
        assert all(p.grad is None for p in trainable_parameters(s.module))


def test_bf16_autocast_trains_on_cpu(tmp_path: Path) -> None:
    strat = _strategy(tmp_path, "train.precision=bf16", "train.lr=1e-2")
    cfg = strat.module.cfg
    batch = train_batch(get_task(cfg.task), _rows(cfg), strat.module.tokenizer, cfg, None)
    before = {k: v.clone() for k, v in strat.trainable_state_dict().items()}
    out = strat.forward(**strat.to_device(batch))
    assert out.logits.dtype == torch.bfloat16  # the forward ran under bf16 autocast
    assert torch.isfinite(out.loss)
    loss = backward_micro_batches(strat, [batch])
    assert loss == pytest.approx(float(out.loss.detach()), rel=2e-2)
    strat.optimizer_step()
    after = strat.trainable_state_dict()
    assert all(v.dtype == torch.float32 for v in after.values())  # master weights stay fp32
    assert sum(not torch.equal(after[k], before[k]) for k in before) > len(before) // 2
    assert all(torch.isfinite(v).all() for v in after.values())


def test_fp16_is_refused_on_cpu(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train.precision: fp16 needs CUDA"):
        _strategy(tmp_path, "train.precision=fp16")


def test_deepspeed_config_from_train_section(tmp_path: Path) -> None:
    from ecglm.train.strategies import deepspeed_config

    train = tiny_config(tmp_path, "train.strategy=deepspeed", "train.zero_stage=3",
                        "train.precision=bf16", "train.grad_accum_steps=4",
                        "train.offload_optimizer=cpu", "train.offload_params=nvme",
                        f"train.nvme_path={tmp_path}/nvme").train
    ds = deepspeed_config(train)
    assert ds["bf16"] == {"enabled": True} and ds["fp16"] == {"enabled": False}
    assert ds["gradient_accumulation_steps"] == 4
    assert ds["train_micro_batch_size_per_gpu"] == train.batch_size
    zero = ds["zero_optimization"]
    assert zero["stage"] == 3
    assert zero["offload_optimizer"]["device"] == "cpu" and "nvme_path" not in zero[
        "offload_optimizer"]
    assert zero["offload_param"] == {"device": "nvme", "pin_memory": True,
                                     "nvme_path": f"{tmp_path}/nvme"}
    fp32 = deepspeed_config(tiny_config(tmp_path, "train.strategy=deepspeed").train)
    assert fp32["bf16"] == {"enabled": False} and fp32["fp16"] == {"enabled": False}
    assert "offload_optimizer" not in fp32["zero_optimization"]
    fp16 = deepspeed_config(tiny_config(tmp_path, "train.strategy=deepspeed",
                                        "train.precision=fp16").train)
    assert fp16["fp16"]["enabled"] is True
