"""The learning benchmark's result (``jobs/bench/learning.py`` -> ``learning.json``) as text.

``make demo`` trains for a few steps only, so its model sits at the majority baseline; the
benchmark trains long enough to show learning. :func:`learning_lines` formats the benchmark's
headline (classify macro AUC vs the label prior, QA exact match per question type vs the
majority and question-only baselines, each with its 95% bootstrap interval) for the demo's
summary, or says how to produce it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

LEARNING_JSON = Path("bench-learning") / "learning.json"
"""Where the benchmark writes its headline, under the config's ``output_dir``."""


def _ci(head: Mapping[str, Any], key: str, sub: str | None = None) -> str:
    value = head.get(key) if sub is None else head.get(key, {}).get(sub)
    ci = head.get(f"{key}_ci95") if sub is None else head.get(f"{key}_ci95", {}).get(sub)
    if value is None:
        return "n/a"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def learning_lines(output_dir: str | Path) -> list[str]:
    """Lines for a summary: the benchmark's figures beside their baselines, or a hint."""
    path = Path(output_dir) / LEARNING_JSON
    if not path.is_file():
        return [f"learned model (bench) : not run yet: python jobs/bench/learning.py "
                f"(about 25 min; writes {path})"]
    head = json.loads(path.read_text())
    lines = [f"learned model (bench) : {path} ({head.get('total_seconds', 0):.0f} s"
             f"{', quick smoke run' if head.get('quick') else ''}), 95% bootstrap intervals",
             f"  classify macro AUC   : {_ci(head, 'classify_macro_auc')} vs label prior "
             f"{_ci(head, 'classify_prior_auc')}"]
    for qtype in head.get("qa_em", {}):
        lines.append(f"  QA EM {qtype:15s}: {_ci(head, 'qa_em', qtype)} vs majority "
                     f"{_ci(head, 'qa_majority_em', qtype)}, question-only "
                     f"{_ci(head, 'qa_blind_em', qtype)} (n={head.get('qa_items', {}).get(qtype)})")
    if head.get("qa_verify_auc") is not None:
        lines.append(f"  QA verify AUC P(yes) : {_ci(head, 'qa_verify_auc')} vs 0.5 (ranks the "
                     f"yes items above the no items?)")
    return lines
