"""Distributed wrappers: DDP (``ray.train.torch.prepare_model``) or a DeepSpeed engine.

Both expose the same small surface to the training loop: ``forward(**batch)``,
``backward_step(loss)``, ``module`` (the unwrapped :class:`ECGLanguageModel`) and
``trainable_state_dict()`` gathered on every rank (ZeRO-3 partitions are all-gathered).
"""

from __future__ import annotations

import contextlib
from typing import Any

import ray.train.torch
import torch
from torch import nn

from ecglm.config.schema import TrainConfig
from ecglm.models.ecg_lm import ECGLanguageModel
from ecglm.train.worker import clip_and_step, make_adamw, warmup_schedule


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (Q-HEART's betas/eps/weight decay by default)."""
    return make_adamw(params, cfg.lr, cfg.betas, cfg.eps, cfg.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> Any:
    """Linear warmup over ``train.warmup_ratio`` of ``train.max_steps``, then cosine
    (``train.schedule: cosine``, Q-HEART) or linear (``linear``, MEIT) decay to 0."""
    return warmup_schedule(opt, cfg.schedule, int(cfg.warmup_ratio * cfg.max_steps),
                           cfg.max_steps)


class DDPStrategy:
    """Plain PyTorch DDP through Ray Train (gloo on CPU, nccl on GPU)."""

    def __init__(self, model: ECGLanguageModel, cfg: TrainConfig) -> None:
        self.module = model
        self.cfg = cfg
        self.wrapped = ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={"find_unused_parameters": False}
        )
        self.optimizer = make_optimizer(trainable_parameters(model), cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg)

    def forward(self, **batch: torch.Tensor) -> Any:
        return self.wrapped(**batch)

    def eval_forward(self, **batch: torch.Tensor) -> Any:
        return self.module(**batch)

    def backward_step(self, loss: torch.Tensor) -> None:
        loss.backward()
        clip_and_step(self.optimizer, self.scheduler, trainable_parameters(self.module),
                      self.cfg.grad_clip)

    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.trainable_state_dict()


def deepspeed_config(cfg: TrainConfig) -> dict[str, Any]:
    """DeepSpeed JSON config for ``train.zero_stage``; fp32 on CPU, bf16 on GPU.

    ``stage3_param_persistence_threshold`` is 0 so that even small parameters are partitioned
    under ZeRO-3 (the default keeps tensors under 1e5 elements whole on every rank).
    """
    return {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {
            "stage": cfg.zero_stage,
            "stage3_param_persistence_threshold": 0,
            "overlap_comm": False,
            "contiguous_gradients": True,
        },
        "bf16": {"enabled": bool(cfg.use_gpu)},
        "fp16": {"enabled": False},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


class DeepSpeedStrategy:
    """DeepSpeed ZeRO-1/2/3 engine built inside the Ray Train worker.

    Uses a client ``torch.optim.AdamW`` (a DeepSpeed ``optimizer`` block would JIT-build fused
    or CPU Adam kernels) and the already-initialised torch.distributed process group.
    """

    def __init__(self, model: ECGLanguageModel, cfg: TrainConfig) -> None:
        # deepspeed is deferred on purpose: only this strategy needs it, its import takes ~3 s
        # and must follow set_process_env (DS_ACCELERATOR)
        import deepspeed

        deepspeed.init_distributed(dist_backend="nccl" if cfg.use_gpu else "gloo")
        self.module = model
        self.cfg = cfg
        params = trainable_parameters(model)
        opt = make_optimizer(params, cfg)
        sched = make_scheduler(opt, cfg)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=opt, model_parameters=params, lr_scheduler=sched,
            config=deepspeed_config(cfg),
        )

    def forward(self, **batch: torch.Tensor) -> Any:
        return self.engine(**batch)

    def eval_forward(self, **batch: torch.Tensor) -> Any:
        return self.engine(**batch)

    def backward_step(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)
        self.engine.step()

    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Full (unpartitioned) trainable tensors; collective: call on every rank."""
        import deepspeed  # deferred on purpose (see __init__)

        params = trainable_parameters(self.module)
        ctx = (deepspeed.zero.GatheredParameters(params, modifier_rank=None)
               if self.cfg.zero_stage == 3 else contextlib.nullcontext())
        with ctx:
            return {k: v.detach().clone() for k, v in self.module.trainable_state_dict().items()}


def build_strategy(model: ECGLanguageModel, cfg: TrainConfig) -> DDPStrategy | DeepSpeedStrategy:
    """The wrapper for ``train.strategy``."""
    if cfg.strategy == "deepspeed":
        return DeepSpeedStrategy(model, cfg)
    return DDPStrategy(model, cfg)
