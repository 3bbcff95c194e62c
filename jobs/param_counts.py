"""Parameter table of the presets, full size and ``--tiny``: `python jobs/param_counts.py`.

Full-size LLMs and vision towers are counted on the meta device from their public
architecture hyper-parameters (nothing is downloaded; see ``ecglm.models.params``); tiny
configs are built for real. Prints a Markdown table (the one in README.md) and writes
``runs/param_counts.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ecglm.config import load_config
from ecglm.models.ecg_lm import build_ecg_lm
from ecglm.models.params import PartCounts, full_size_counts, human, model_counts

PRESETS = {
    "qheart_ecgqa": "Q-HEART (ECG-QA)",
    "meit_reports": "MEIT (report generation)",
    "gem_grounding": "GEM (grounded interpretation)",
}


def _row(counts: PartCounts) -> dict[str, int]:
    return {"encoder": counts.encoder[0], "encoder_trainable": counts.encoder[1],
            "mapper": counts.mapper[0], "llm": counts.llm[0], "llm_trainable": counts.llm[1],
            "lora": counts.lora[0], "total": counts.total, "trainable": counts.trainable}


def main() -> int:
    repo = Path(__file__).resolve().parents[1]
    out: dict[str, dict] = {}
    lines = ["| preset | reproduces | encoder | mapper | fusion | LLM | size | params total | "
             "trainable (encoder / mapper / LoRA) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, paper in PRESETS.items():
        path = repo / "jobs" / "configs" / f"{name}.yaml"
        full = load_config(path)
        tiny = load_config(path, tiny=True)
        counts = {"full": full_size_counts(full), "tiny": model_counts(build_ecg_lm(tiny))}
        out[name] = {size: _row(c) for size, c in counts.items()}
        for size, c in counts.items():
            cfg = full if size == "full" else tiny
            llm = cfg.llm.path if cfg.llm.source == "path" else f"{cfg.llm.source} Llama"
            lines.append(
                f"| `{name}` | {paper} | {cfg.encoder.name} | {cfg.mapper.name} | "
                f"{cfg.fusion.name} | {llm} | {size} | {human(c.total)} | {human(c.trainable)} "
                f"({human(c.encoder[1])} / {human(c.mapper[1])} / {human(c.lora[1])}) |")
    print("\n".join(lines))
    dst = repo / "runs" / "param_counts.json"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
