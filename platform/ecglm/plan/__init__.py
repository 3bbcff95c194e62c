"""Memory planner: model-state and activation memory of a config for ZeRO 0-3 and offload,
per GPU and per node, and the cheapest setting that fits (``ecglm plan``, and the
``train.memory_check`` preflight of ``ecglm train`` / ``ecglm tune``)."""

from ecglm.plan.arch import BUILTIN_ARCHS, LLMArch, llm_arch
from ecglm.plan.memory import ModelSizes, Setting, Workload, deepspeed_compatible
from ecglm.plan.planner import Estimate, Hardware, Plan, make_plan

__all__ = ["BUILTIN_ARCHS", "Estimate", "Hardware", "LLMArch", "ModelSizes", "Plan", "Setting",
           "Workload", "deepspeed_compatible", "llm_arch", "make_plan"]
