"""``ecglm data check PATH...``: validate records/folders with the configured normalisation;
prints a table and, last, one JSON line of counts."""

from __future__ import annotations

from typing import Optional, Sequence

from ecglm.config import ExperimentConfig
from ecglm.data.check import run_check


def run(cfg: ExperimentConfig, paths: Sequence[str], fs: Optional[int] = None,
        seconds: Optional[float] = None) -> str:
    """The check report of ``paths`` at ``fs`` Hz / ``seconds`` s (default ``cfg.data``)."""
    fs = fs or cfg.data.fs
    seconds = seconds or cfg.data.seconds
    return run_check(list(paths), cfg.data.normalize, fs, int(round(fs * seconds)))
