"""Deterministic ECG-report-like hypothesis/reference pairs for metric comparisons."""

from __future__ import annotations

import random

_PHRASES = [
    "sinus rhythm", "sinus bradycardia", "sinus tachycardia", "atrial fibrillation",
    "left axis deviation", "right bundle branch block", "left ventricular hypertrophy",
    "incomplete right bundle branch block", "first degree av block", "normal ecg",
    "st depression in leads v4-v6", "t wave inversion in II, III and aVF",
    "QRS duration 120 ms", "prolonged QT interval (QTc 480 ms)", "premature ventricular beats",
    "inferior myocardial infarction, age undetermined", "nonspecific ST-T changes",
    "low voltage in limb leads", "poor R-wave progression", "borderline ECG",
    "The heart rate is 72 bpm.", "abnormal; consider ischemia!", "no significant changes",
]


def make_pairs(n: int, seed: int = 0, max_refs: int = 1) -> tuple[list[str], list[list[str]]]:
    """``n`` hypotheses and reference lists (1..max_refs each) built from ECG phrases."""
    rng = random.Random(seed)

    def report() -> str:
        parts = rng.sample(_PHRASES, rng.randint(1, 5))
        sep = rng.choice([", ", ". ", "; ", " and "])
        return sep.join(parts)

    hyps, refs = [], []
    for i in range(n):
        rs = [report() for _ in range(rng.randint(1, max_refs))]
        mode = i % 4
        if mode == 0:
            h = rs[0]                                   # identical
        elif mode == 1:
            words = rs[0].split()
            rng.shuffle(words)
            h = " ".join(words[: max(1, len(words) - rng.randint(0, 3))])
        elif mode == 2:
            h = report()                                # unrelated report
        else:
            h = rs[0].replace("sinus", "sinuses").replace("block", "blocks")  # stems
        hyps.append(h)
        refs.append(rs)
    return hyps, refs
