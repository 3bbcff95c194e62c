"""Distributed wrappers: DDP (``ray.train.torch.prepare_model``) or a DeepSpeed engine.

Both build the model (:func:`build_ecg_lm`, after the process group for DeepSpeed: ZeRO-3's
``zero.Init`` needs it) and expose the same small surface to the training loop:

* ``micro_step(batch, weight, last)`` -- forward + backward of one micro-batch, its loss
  scaled by ``weight`` (the micro-batch's share of the step's answer tokens);
* ``optimizer_step()`` -- clip, step the optimizer and the schedule, clear the gradients (one
  optimizer step per ``train.grad_accum_steps`` micro-batches);
* ``eval_forward(**batch)`` under ``torch.no_grad``, ``to_device(batch)``;
* ``trainable_state_dict()`` gathered on every rank (ZeRO-3 partitions are all-gathered);
* ``save(folder, rank, step)`` / ``restore(folder, same_world)`` of the resumable state.

Precision (``train.precision``): DDP runs ``torch.autocast`` (bf16 on CPU or CUDA; fp16 on
CUDA only, with a ``GradScaler``); DeepSpeed gets its ``bf16``/``fp16`` config sections and the
floating inputs are cast to that dtype. Master weights and optimizer states stay fp32.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Mapping, Optional

import ray.train.torch
import torch
from torch import nn

from ecglm.checkpoint import (DEEPSPEED_DIR, read_trainer_state, write_trainer_state)
from ecglm.config import ConfigError, ExperimentConfig
from ecglm.config.schema import TrainConfig
from ecglm.models.ecg_lm import ECGLanguageModel, build_ecg_lm
from ecglm.train.worker import clip_and_step, make_adamw, warmup_schedule

PRECISION_DTYPES: dict[str, Optional[torch.dtype]] = {
    "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (Q-HEART's betas/eps/weight decay by default)."""
    return make_adamw(params, cfg.lr, cfg.betas, cfg.eps, cfg.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> Any:
    """Linear warmup over ``train.warmup_ratio`` of ``train.max_steps`` (optimizer steps), then
    cosine (``train.schedule: cosine``, Q-HEART) or linear (``linear``, MEIT) decay to 0."""
    return warmup_schedule(opt, cfg.schedule, int(cfg.warmup_ratio * cfg.max_steps),
                           cfg.max_steps)


def check_precision(cfg: TrainConfig, device_type: str) -> None:
    """Refuse ``train.precision: fp16`` off CUDA (CPU autocast has no fp16 loss scaling).

    Raises:
        ConfigError: names ``train.precision``.
    """
    if cfg.precision == "fp16" and device_type != "cuda":
        raise ConfigError(f"train.precision: fp16 needs CUDA devices (this worker runs on "
                          f"{device_type}); use bf16 or fp32")


def to_device(batch: Mapping[str, Any], device: torch.device,
              float_dtype: Optional[torch.dtype] = None) -> dict[str, Any]:
    """``batch`` with its tensors on ``device``; floating tensors cast to ``float_dtype`` when
    given (DeepSpeed bf16/fp16 modules take inputs of their dtype)."""
    out: dict[str, Any] = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if float_dtype is not None and v.is_floating_point():
                v = v.to(float_dtype)
        out[k] = v
    return out


def _build_model(cfg: ExperimentConfig, ds_config: Optional[dict[str, Any]],
                 initial_trainable: Optional[Mapping[str, torch.Tensor]]) -> ECGLanguageModel:
    """The model, gradient checkpointing switched on when asked, resumed weights loaded
    (under ZeRO-3 partitioned parameters are gathered, set on every rank, re-partitioned)."""
    model = build_ecg_lm(cfg, ds_config=ds_config)
    if cfg.train.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    if initial_trainable is not None:
        params = [p for p in model.parameters() if hasattr(p, "ds_id")]
        if params:
            import deepspeed  # deferred on purpose: only partitioned (ZeRO-3) models get here

            with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
                model.load_trainable_state_dict(dict(initial_trainable))
        else:
            model.load_trainable_state_dict(dict(initial_trainable))
    return model


class DDPStrategy:
    """Plain PyTorch DDP through Ray Train (gloo on CPU, nccl on GPU).

    Args:
        distributed: False builds a single-process strategy without Ray Train (no wrapper,
            on ``device``, CPU by default): the same step logic for unit tests and tools.
        device: the device outside Ray Train (default CPU); ignored when ``distributed``.
    """

    def __init__(self, cfg: ExperimentConfig,
                 initial_trainable: Optional[Mapping[str, torch.Tensor]] = None, *,
                 distributed: bool = True, device: Optional[torch.device] = None) -> None:
        self.cfg = cfg.train
        self.device = (ray.train.torch.get_device() if distributed
                       else torch.device(device or "cpu"))
        check_precision(self.cfg, self.device.type)
        model = _build_model(cfg, None, initial_trainable)
        self.module = model
        if distributed:
            self.wrapped = ray.train.torch.prepare_model(
                model, parallel_strategy_kwargs={"find_unused_parameters": False})
        else:
            self.wrapped = model.to(self.device)
        self.optimizer = make_optimizer(trainable_parameters(model), self.cfg)
        self.scheduler = make_scheduler(self.optimizer, self.cfg)
        self.autocast_dtype = PRECISION_DTYPES[self.cfg.precision]
        self.scaler = torch.amp.GradScaler("cuda") if self.cfg.precision == "fp16" else None

    def _autocast(self) -> Any:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def to_device(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        return to_device(batch, self.device)

    def forward(self, **batch: torch.Tensor) -> Any:
        with self._autocast():
            return self.wrapped(**batch)

    def eval_forward(self, **batch: torch.Tensor) -> Any:
        # the unwrapped module is enough for a no-grad forward (its parameters live on the
        # worker's device: prepare_model moved them)
        with self._autocast():
            return self.module(**batch)

    def micro_step(self, batch: Mapping[str, torch.Tensor], weight: float, last: bool) -> Any:
        """Forward + backward of one micro-batch with loss ``weight * loss``; gradients are
        all-reduced only on the ``last`` micro-batch of the step (``no_sync`` before)."""
        sync = (contextlib.nullcontext() if last or not hasattr(self.wrapped, "no_sync")
                else self.wrapped.no_sync())
        with sync:
            out = self.forward(**batch)
            loss = out.loss * weight
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return out

    def optimizer_step(self) -> None:
        params = trainable_parameters(self.module)
        if self.scaler is None:
            clip_and_step(self.optimizer, self.scheduler, params, self.cfg.grad_clip)
            return
        self.scaler.unscale_(self.optimizer)
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.trainable_state_dict()

    def save(self, folder: Path, rank: int, step: int) -> dict[str, Any]:
        """Rank 0 writes ``trainer_state.pt`` (optimizer, schedule, scaler: replicated under
        DDP, so one copy serves any world size). Returns the resume facts for ``state.json``."""
        if rank == 0:
            write_trainer_state(folder, {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else {}})
        return {"strategy": "ddp"}

    def restore(self, folder: Path, resume: Mapping[str, Any], same_world: bool
                ) -> dict[str, bool]:
        """Load optimizer, schedule and scaler state (weights were loaded at build). The
        optimizer state is the full replicated one: restored on any world size."""
        state = read_trainer_state(folder)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        return {"optimizer": True, "scheduler": True}


def deepspeed_config(cfg: TrainConfig) -> dict[str, Any]:
    """DeepSpeed JSON config for the ``train`` section.

    ``bf16``/``fp16`` sections from ``train.precision``; ``gradient_accumulation_steps`` from
    ``train.grad_accum_steps``; ZeRO offload sections from ``train.offload_optimizer`` /
    ``train.offload_params`` (``nvme`` at ``train.nvme_path``). ``stage3_param_persistence_threshold``
    is 0 so that even small parameters are partitioned under ZeRO-3 (the default keeps tensors
    under 1e5 elements whole on every rank).
    """
    zero: dict[str, Any] = {
        "stage": cfg.zero_stage,
        "stage3_param_persistence_threshold": 0,
        "overlap_comm": False,
        "contiguous_gradients": True,
    }
    if cfg.offload_optimizer != "none":
        zero["offload_optimizer"] = {"device": cfg.offload_optimizer, "pin_memory": True,
                                     **({"nvme_path": cfg.nvme_path}
                                        if cfg.offload_optimizer == "nvme" else {})}
    if cfg.offload_params != "none":
        zero["offload_param"] = {"device": cfg.offload_params, "pin_memory": True,
                                 **({"nvme_path": cfg.nvme_path}
                                    if cfg.offload_params == "nvme" else {})}
    return {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.precision == "bf16"},
        "fp16": ({"enabled": True, "loss_scale": 0, "initial_scale_power": 16}
                 if cfg.precision == "fp16" else {"enabled": False}),
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


class DeepSpeedStrategy:
    """DeepSpeed ZeRO-1/2/3 engine built inside the Ray Train worker.

    ``deepspeed.init_distributed`` runs BEFORE the model is built (ZeRO-3's ``zero.Init`` needs
    the process group). Uses a client ``torch.optim.AdamW`` (a DeepSpeed ``optimizer`` block
    would JIT-build fused or CPU Adam kernels).

    Args:
        device: this rank's device when running outside Ray Train (a process group set up
            by the caller's ``RANK``/``WORLD_SIZE``/``MASTER_*`` environment, e.g. a
            benchmark's bare loop); default ``ray.train.torch.get_device()``.
    """

    def __init__(self, cfg: ExperimentConfig,
                 initial_trainable: Optional[Mapping[str, torch.Tensor]] = None, *,
                 device: Optional[torch.device] = None) -> None:
        # deepspeed is deferred on purpose: only this strategy needs it, its import takes ~3 s
        # and must follow set_process_env (DS_ACCELERATOR)
        import deepspeed

        self.cfg = cfg.train
        self.device = (torch.device(device) if device is not None
                       else ray.train.torch.get_device())
        check_precision(self.cfg, self.device.type)
        deepspeed.init_distributed(dist_backend="nccl" if self.device.type == "cuda" else "gloo")
        ds_config = deepspeed_config(self.cfg)
        model = _build_model(cfg, ds_config, initial_trainable)
        self.module = model
        params = trainable_parameters(model)
        if self.cfg.offload_optimizer == "none":
            opt: Any = make_optimizer(params, self.cfg)
            sched: Any = make_scheduler(opt, self.cfg)
        else:  # DeepSpeed builds its CPU Adam from the config's optimizer block
            opt = None
            ds_config["optimizer"] = {"type": "AdamW", "params": {
                "lr": self.cfg.lr, "betas": list(self.cfg.betas), "eps": self.cfg.eps,
                "weight_decay": self.cfg.weight_decay}}

            def sched(optimizer: torch.optim.Optimizer) -> Any:
                return make_scheduler(optimizer, self.cfg)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=opt, model_parameters=params, lr_scheduler=sched,
            config=ds_config,
        )
        self.input_dtype = PRECISION_DTYPES[self.cfg.precision]

    def to_device(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        return to_device(batch, self.engine.device, self.input_dtype)

    def forward(self, **batch: torch.Tensor) -> Any:
        return self.engine(**batch)

    def eval_forward(self, **batch: torch.Tensor) -> Any:
        return self.engine(**batch)

    def micro_step(self, batch: Mapping[str, torch.Tensor], weight: float, last: bool) -> Any:
        """Forward + ``engine.backward`` + ``engine.step`` of one micro-batch (DeepSpeed steps
        the optimizer at its accumulation boundary and divides the loss by the accumulation
        steps itself, hence the ``grad_accum_steps`` factor)."""
        out = self.engine(**batch)
        self.engine.backward(out.loss * (weight * self.cfg.grad_accum_steps))
        self.engine.step()
        return out

    def optimizer_step(self) -> None:
        """Nothing: ``engine.step()`` of the last micro-batch stepped the optimizer."""

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

    def save(self, folder: Path, rank: int, step: int) -> dict[str, Any]:
        """Every rank: ``engine.save_checkpoint(folder/deepspeed, tag="step<step>")`` (its
        ZeRO shards, frozen parameters excluded); rank 0 also writes the schedule state to
        ``trainer_state.pt`` (used when resuming on another world size). Collective."""
        tag = f"step{step}"
        (Path(folder) / DEEPSPEED_DIR).mkdir(parents=True, exist_ok=True)  # every rank's folder
        self.engine.save_checkpoint(str(Path(folder) / DEEPSPEED_DIR), tag=tag,
                                    exclude_frozen_parameters=True)
        if rank == 0:
            write_trainer_state(folder, {"scheduler": self.scheduler.state_dict()})
        return {"strategy": "deepspeed", "zero_stage": self.cfg.zero_stage, "deepspeed_tag": tag}

    def restore(self, folder: Path, resume: Mapping[str, Any], same_world: bool
                ) -> dict[str, bool]:
        """Same world size and ZeRO stage: ``engine.load_checkpoint`` (module, sharded
        optimizer states, schedule). Otherwise the ZeRO optimizer shards do not fit this
        partitioning: weights (loaded at build from ``trainable.safetensors``) and the schedule
        are restored, the optimizer moments start from zero. Collective."""
        if same_world and resume.get("zero_stage") == self.cfg.zero_stage \
                and resume.get("deepspeed_tag"):
            path, _ = self.engine.load_checkpoint(
                str(Path(folder) / DEEPSPEED_DIR), tag=resume["deepspeed_tag"],
                load_module_strict=False, load_optimizer_states=True,
                load_lr_scheduler_states=True)
            if path is None:
                raise FileNotFoundError(f"checkpoint {folder}: DeepSpeed found no "
                                        f"'{DEEPSPEED_DIR}/{resume['deepspeed_tag']}' to load")
            return {"optimizer": True, "scheduler": True}
        self.scheduler.load_state_dict(read_trainer_state(folder)["scheduler"])
        return {"optimizer": False, "scheduler": True}


def backward_micro_batches(strategy: Any, batches: list[Mapping[str, torch.Tensor]]) -> float:
    """Forward + backward of one optimizer step's micro-batches (``train.grad_accum_steps`` of
    them, CPU tensors), each loss weighted by its share of the step's answer tokens, so the
    accumulated gradient is that of one batch holding every micro-batch (token-mean loss).
    Gradients are synchronised on the last micro-batch only. Returns the step's
    token-weighted mean loss. The caller then calls ``strategy.optimizer_step()``."""
    n_tok = [float((b["labels"] != -100).sum()) for b in batches]
    total = sum(n_tok)
    loss = 0.0
    for i, batch in enumerate(batches):
        weight = n_tok[i] / total if total else 1.0 / len(batches)
        out = strategy.micro_step(strategy.to_device(batch), weight, last=i == len(batches) - 1)
        loss += float(out.loss.detach()) * weight
    return loss


def build_strategy(cfg: ExperimentConfig,
                   initial_trainable: Optional[Mapping[str, torch.Tensor]] = None
                   ) -> DDPStrategy | DeepSpeedStrategy:
    """Build the model and its wrapper for ``train.strategy`` (``initial_trainable``: resumed
    trainable tensors, loaded before wrapping)."""
    if cfg.train.strategy == "deepspeed":
        return DeepSpeedStrategy(cfg, initial_trainable)
    return DDPStrategy(cfg, initial_trainable)
