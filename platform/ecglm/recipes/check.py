"""``ecglm data check PATH...``: validate records/folders with the configured normalisation,
in parallel; prints a table and, last, one JSON line of counts (progress goes to stderr)."""

from __future__ import annotations

from typing import Optional, Sequence

from ecglm.config import ExperimentConfig
from ecglm.data.check import default_workers, run_check
from ecglm.data.readers import DEFAULT_LIMITS, HeaderLimits


def run(cfg: ExperimentConfig, paths: Sequence[str], fs: Optional[int] = None,
        seconds: Optional[float] = None, workers: Optional[int] = None,
        progress: Optional[bool] = None, max_record_seconds: Optional[float] = None,
        fs_limits: Optional[Sequence[float]] = None) -> str:
    """The check report of ``paths`` at ``fs`` Hz / ``seconds`` s (default ``cfg.data``).

    Args:
        workers: processes (default: the CPUs this process may use; 1 reads in-process).
        progress: progress line on stderr (None: only on a terminal).
        max_record_seconds: longest duration a header may declare (default 24 h).
        fs_limits: ``[lo, hi]`` Hz a header's sampling frequency must lie in
            (default 10 - 50,000 Hz).

    Raises:
        ValueError: ``workers`` < 1 or implausible limits.
    """
    fs = fs or cfg.data.fs
    seconds = seconds or cfg.data.seconds
    n_workers = default_workers() if workers is None else workers
    if n_workers < 1:
        raise ValueError(f"--workers {n_workers}: expected >= 1")
    lo, hi = fs_limits or (DEFAULT_LIMITS.min_fs_hz, DEFAULT_LIMITS.max_fs_hz)
    limits = HeaderLimits(max_seconds=max_record_seconds or DEFAULT_LIMITS.max_seconds,
                          min_fs_hz=float(lo), max_fs_hz=float(hi))
    return run_check(list(paths), cfg.data.normalize, fs, int(round(fs * seconds)), limits,
                     n_workers, progress)
