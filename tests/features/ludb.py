"""Expert beats of one LUDB lead (``wfdb.rdann(record, ext)``), for the LUDB tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def expert_beats(record: Path, ext: str) -> tuple[list[dict[str, float]], tuple[int, int]]:
    """Beats as dicts of samples (``r``, ``qrs_on``, ``qrs_off``, ``p_on``, ``t_off``; NaN
    where not annotated) and the annotated span ``(first, last)`` sample."""
    import wfdb

    ann = wfdb.rdann(str(record), ext)
    s, sym = np.asarray(ann.sample), list(ann.symbol)
    waves = []
    for k, c in enumerate(sym):
        if c in ("p", "N", "t"):
            on = float(s[k - 1]) if k > 0 and sym[k - 1] == "(" else np.nan
            off = float(s[k + 1]) if k + 1 < len(sym) and sym[k + 1] == ")" else np.nan
            waves.append((c, on, float(s[k]), off))
    beats = []
    for j, (c, on, peak, off) in enumerate(waves):
        if c != "N":
            continue
        p_on = waves[j - 1][1] if j > 0 and waves[j - 1][0] == "p" else np.nan
        t_off = waves[j + 1][3] if j + 1 < len(waves) and waves[j + 1][0] == "t" else np.nan
        beats.append({"r": peak, "qrs_on": on, "qrs_off": off, "p_on": p_on, "t_off": t_off})
    return beats, (int(s.min()), int(s.max()))
