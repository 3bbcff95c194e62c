"""A plan as text (tables per GPU and per node, verdict, recommendation) and as JSON."""

from __future__ import annotations

from typing import Any

from ecglm.models.params import human
from ecglm.plan.memory import GIB
from ecglm.plan.planner import Estimate, Plan, setting_json


def _gib(n: float) -> str:
    return f"{n / GIB:.1f}"


def _fit(value: bool | None) -> str:
    return "?" if value is None else ("yes" if value else "NO")


def estimate_row(est: Estimate, plan: Plan) -> str:
    """One Markdown row: setting, per-device parts, per-node totals, fit, max micro-batch."""
    hw = plan.hardware
    s = est.states
    per_node_dev = est.per_device * hw.gpus_per_node
    return (f"| {est.setting.label()} | {est.setting.micro_batch} | {_gib(s.params)} | "
            f"{_gib(s.grads)} | {_gib(s.optimizer)} | {_gib(est.activations)} | "
            f"{_gib(est.per_device)} | {_gib(per_node_dev)} | {_gib(est.host_per_node)} | "
            f"{_gib(s.nvme_per_node)} | {_fit(est.fits_device)} / {_fit(est.fits_host)} | "
            f"{'?' if est.max_micro_batch is None else est.max_micro_batch} |")


TABLE_HEAD = ("| setting | micro-batch | params | grads | optimizer | activations | per GPU | "
              "GPUs per node | host per node | NVMe per node | fits GPU / host | "
              "max micro-batch |\n|---|---|---|---|---|---|---|---|---|---|---|---|")


def render(plan: Plan) -> str:
    """Human-readable plan (GiB)."""
    hw, c = plan.hardware, plan.counts
    device = (f"{hw.nodes} node(s) x {hw.gpus_per_node} GPU(s) of "
              f"{'?' if hw.gpu_mem_gib is None else hw.gpu_mem_gib} GiB"
              if hw.use_gpu else f"{hw.nodes} node(s) x {hw.gpus_per_node} CPU worker(s)")
    lines = [
        f"memory plan: {plan.name} on {device}, host "
        f"{'?' if hw.cpu_mem_gib is None else hw.cpu_mem_gib} GiB per node",
        f"LLM {plan.arch.name}: {human(c['llm'])} params ({plan.arch.n_layers} layers, "
        f"h {plan.arch.hidden_size}), LoRA {human(c['lora'])}, ECG side {human(c['ecg_side'])}"
        f" ({human(c['ecg_side_trainable'])} trainable); trainable {human(c['trainable'])}; "
        f"sequence {c['seq_tokens']} tokens ({c['prefix_tokens']} ECG prefix)",
        "", "configured setting (GiB per GPU, except the per-node columns):", TABLE_HEAD,
        estimate_row(plan.configured, plan), "",
        "every setting, cheapest first (fewest offloads, lowest ZeRO stage, no "
        "checkpointing, largest micro-batch):", TABLE_HEAD]
    lines += [estimate_row(e, plan) for e in plan.candidates]
    lines.append("")
    lines.append(f"verdict: the configured setting {'FITS' if plan.fits else 'DOES NOT FIT'}"
                 f" ({plan.configured.setting.label()}, micro-batch "
                 f"{plan.configured.setting.micro_batch}, "
                 f"{_gib(plan.configured.per_device)} GiB per "
                 f"{'GPU' if hw.use_gpu else 'worker'})")
    if plan.recommended is not None:
        rec = setting_json(plan.recommended.setting, plan.recommended_grad_accum)
        lines.append(f"recommended: {rec['label']} with micro-batch "
                     f"{plan.recommended.setting.micro_batch} x grad_accum_steps "
                     f"{plan.recommended_grad_accum} ({_gib(plan.recommended.per_device)} GiB "
                     f"per device; largest micro-batch that fits: "
                     f"{plan.recommended.max_micro_batch})")
        lines.append("  overrides: " + " ".join(f"{k}={v}" for k, v in rec.items()
                                               if k != "label" and v is not None))
    else:
        lines.append("recommended: none fits" if any(
            e.max_micro_batch == 0 for e in plan.candidates) else
            "recommended: none (memory limits unknown)")
    lines += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(lines)


def to_json(plan: Plan) -> dict[str, Any]:
    """The plan as one JSON-ready dict: ``fits``, ``per_gpu_gib``, ``recommended`` first."""
    hw, conf = plan.hardware, plan.configured
    rec = None
    if plan.recommended is not None:
        rec = {**setting_json(plan.recommended.setting, plan.recommended_grad_accum),
               "per_gpu_gib": round(plan.recommended.per_device / GIB, 3),
               "max_micro_batch": plan.recommended.max_micro_batch}
    return {
        "fits": plan.fits,
        "per_gpu_gib": round(conf.per_device / GIB, 3),
        "recommended": rec,
        "per_node_gib": {"gpu": round(conf.per_device * hw.gpus_per_node / GIB, 3),
                         "host": round(conf.host_per_node / GIB, 3),
                         "nvme": round(conf.states.nvme_per_node / GIB, 3)},
        "breakdown_gib": conf.breakdown_gib(),
        "setting": setting_json(conf.setting),
        "max_micro_batch": conf.max_micro_batch,
        "fits_gpu": conf.fits_device, "fits_host": conf.fits_host,
        "hardware": {"nodes": hw.nodes, "gpus_per_node": hw.gpus_per_node,
                     "gpu_mem_gib": hw.gpu_mem_gib, "cpu_mem_gib": hw.cpu_mem_gib,
                     "use_gpu": hw.use_gpu},
        "params": plan.counts, "model": plan.arch.name,
        "settings": [{"label": e.setting.label(), "per_gpu_gib": round(e.per_device / GIB, 3),
                      "host_per_node_gib": round(e.host_per_node / GIB, 3), "fits": e.fits,
                      "max_micro_batch": e.max_micro_batch} for e in plan.candidates],
        "warnings": plan.warnings,
    }
