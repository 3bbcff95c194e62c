"""README table of the memory planner: `python jobs/plan_table.py`.

The three presets with their LLM replaced by the built-in Llama architectures (1B, 8B, 70B),
in bf16 (``train.precision=bf16 llm.dtype=bfloat16``), on one node of 8 GPUs of 80 GiB and of
40 GiB (host RAM 1024 GiB). Per cell: the configured setting's GiB per GPU and whether it
fits, then the cheapest setting that fits (``ecglm.plan.planner``) with its micro-batch x
gradient accumulation and GiB per GPU. Prints a Markdown table.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ecglm.config import load_config
from ecglm.plan.memory import GIB
from ecglm.plan.planner import Hardware, make_plan

REPO = Path(__file__).resolve().parents[1]
PRESETS = ("qheart_ecgqa", "meit_reports", "gem_grounding")
MODELS = ("llama-1b", "llama-8b", "llama-70b")
GPUS = (80.0, 40.0)


def main() -> int:
    print("| preset | LLM | GPUs | configured (GiB/GPU, fits) | cheapest that fits "
          "(micro-batch x accum, GiB/GPU) |")
    print("|---|---|---|---|---|")
    for preset in PRESETS:
        cfg = load_config(REPO / "jobs" / "configs" / f"{preset}.yaml",
                          ["train.precision=bf16", "llm.dtype=bfloat16"])
        for model in MODELS:
            for mem in GPUS:
                plan = make_plan(cfg, Hardware(1, 8, mem, 1024.0), model)
                conf = plan.configured
                rec = plan.recommended
                best = ("none" if rec is None else
                        f"{rec.setting.label()} ({rec.setting.micro_batch} x "
                        f"{plan.recommended_grad_accum}, {rec.per_device / GIB:.1f})")
                print(f"| {preset} | {model} | 8x{mem:.0f} GiB | {conf.setting.label()} b"
                      f"{conf.setting.micro_batch}: {conf.per_device / GIB:.1f}, "
                      f"{'yes' if plan.fits else 'no'} | {best} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
