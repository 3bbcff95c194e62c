"""Zero-shot superclass classification with the pretrained towers.

Every class ``c`` gets a prompt (``pretrain.label_prompt`` with the class description), embedded
by the text tower. The score of ECG ``n`` for class ``c`` is the cosine similarity of its ECG
embedding to the prompt embedding (no classifier is fitted, no training labels are used).

AUC per class is :func:`ecglm.evaluation.metrics.binary_auc` (Mann-Whitney U, mid-ranks for
ties). A class without positives or without negatives among the evaluated records has no AUC
(``None``) and is left out of the macro AUC, which is the plain mean over the remaining
classes (NaN when none remains); ``n_classes_used`` says how many entered it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from ecglm.evaluation.classify import SUPERCLASSES
from ecglm.evaluation.metrics import binary_auc


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def zero_shot_scores(ecg_emb: np.ndarray, prompt_emb: np.ndarray) -> np.ndarray:
    """Cosine similarities ``(N, C)`` of ECG embeddings ``(N, E)`` to prompt embeddings
    ``(C, E)``."""
    e = _unit(np.asarray(ecg_emb, dtype=np.float64))
    p = _unit(np.asarray(prompt_emb, dtype=np.float64))
    return e @ p.T


@dataclass
class ZeroShotResult:
    """AUCs of one evaluated set.

    Attributes:
        per_class: class -> AUC, ``None`` where the class lacks positives or negatives.
        macro_auc: mean of the defined per-class AUCs (NaN when none is defined).
        n_classes_used: how many classes entered ``macro_auc``.
        n_records: evaluated records.
        prevalence: class -> share of positive records.
    """

    per_class: dict[str, Optional[float]]
    macro_auc: float
    n_classes_used: int
    n_records: int
    prevalence: dict[str, float] = field(default_factory=dict)

    def metrics(self, prefix: str) -> dict[str, float]:
        """Flat finite metrics: ``{prefix}/macro_auc``, ``{prefix}/auc/<class>``,
        ``{prefix}/n_classes_used``, ``{prefix}/n_records``."""
        out = {f"{prefix}/n_classes_used": float(self.n_classes_used),
               f"{prefix}/n_records": float(self.n_records)}
        if math.isfinite(self.macro_auc):
            out[f"{prefix}/macro_auc"] = self.macro_auc
        out.update({f"{prefix}/auc/{c}": v for c, v in self.per_class.items() if v is not None})
        return out


def zero_shot_auc(scores: np.ndarray, y: np.ndarray,
                  classes: Sequence[str] = SUPERCLASSES) -> ZeroShotResult:
    """Per-class and macro AUC of ``scores`` ``(N, C)`` against 0/1 labels ``y`` ``(N, C)``.

    Raises:
        ValueError: the shapes differ or do not match ``classes``.
    """
    s = np.asarray(scores, dtype=np.float64)
    yt = np.asarray(y).astype(bool)
    if s.shape != yt.shape or s.ndim != 2 or s.shape[1] != len(classes):
        raise ValueError(f"zero_shot_auc: scores {s.shape} and labels {yt.shape} must both be "
                         f"(N, {len(classes)})")
    per: dict[str, Optional[float]] = {}
    for c, name in enumerate(classes):
        pos = int(yt[:, c].sum())
        per[name] = binary_auc(yt[:, c], s[:, c]) if 0 < pos < len(yt) else None
    used = [v for v in per.values() if v is not None]
    prev = {name: float(yt[:, c].mean()) if len(yt) else 0.0 for c, name in enumerate(classes)}
    return ZeroShotResult(per, float(np.mean(used)) if used else float("nan"), len(used),
                          len(yt), prev)
