"""``ecglm data check PATH...``: read every record under the paths and say which are usable.

Every entry found is accounted for: ``in == ok + quarantined`` (a flagged record is ``ok``;
its flags are listed in the reason column). Entries are the records and what
:func:`ecglm.data.readers.scan_paths` finds wrong while listing (orphan signal files, dangling
symlinks, folders that cannot be listed); other files (annotations, CSV) are counted in
``other_files``.

Records are read in parallel by a process pool (:class:`ProcessPoolExecutor`, see
:data:`START_METHOD`) in chunks, with at most ``4 x workers`` chunks in flight, and come back
in input order, so the table does not depend on the number of workers. A process
pool rather than Ray: a check is a one-machine CLI command over local files, and Ray's start
(4-7 s, ~1 GiB of processes) would cost more than checking thousands of records.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Literal, Optional, TextIO

from ecglm.config.schema import NormalizeConfig
from ecglm.data.check_progress import ProgressLine
from ecglm.data.errors import RecordError
from ecglm.data.readers import DEFAULT_LIMITS, HeaderLimits, read_record, scan_paths
from ecglm.data.readers.scan import ScanEntry, header_signal_names

START_METHOD = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
"""How pool workers start: ``fork`` where the OS has it (no re-import, works from any main
module: a script, ``python -m``, stdin, a notebook; ``forkserver``/``spawn`` re-run the main
module and fail from stdin); ``spawn`` elsewhere. Workers only read files and return small
results, so the parent's threads (BLAS, a Ray driver) are never needed in them (checked with
a local Ray running)."""
IN_FLIGHT_PER_WORKER = 4
"""Chunks submitted ahead per worker process (bounds memory and futures for 100k files)."""


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one entry: ``status`` ``ok``, ``flagged`` (usable, see ``reason``) or
    ``quarantined`` (unusable; ``field`` and ``reason`` say why)."""

    record: str
    status: Literal["ok", "flagged", "quarantined"]
    field: str
    reason: str
    n_bytes: int = 0
    """Bytes of the entry's files (header + signal files), for the progress rate."""


@dataclass(frozen=True)
class CheckSettings:
    """How records are read: the ``data.normalize`` policy, target rate (Hz) and length
    (samples), and the header limits."""

    policy: NormalizeConfig
    fs: int
    n_samples: int
    limits: HeaderLimits = DEFAULT_LIMITS


@dataclass(frozen=True)
class CheckReport:
    """Every entry's result in input order plus the count of other (non-record) files."""

    results: list[CheckResult]
    other_files: int = 0


def record_bytes(path: str) -> int:
    """Bytes on disk of record ``path``: its ``.mat`` (CPSC2018) or its ``.hea`` plus the
    signal files the header names; files that cannot be stat'ed count 0."""
    p = Path(path)
    if p.suffix.lower() == ".mat":
        files = [p]
    else:
        files = [Path(path + ".hea")]
        files += [p.parent / n for n in header_signal_names(str(p.parent), [p.name + ".hea"])]
    total = 0
    for f in files:
        try:
            total += f.stat().st_size
        except OSError:
            pass
    return total


def check_record(path: str, policy: NormalizeConfig, fs: int, n_samples: int,
                 limits: HeaderLimits = DEFAULT_LIMITS) -> CheckResult:
    """Read and normalise one record; never raises for a bad record."""
    size = record_bytes(path)
    try:
        rec = read_record(path, policy, fs, n_samples, limits)
    except RecordError as exc:
        return CheckResult(path, "quarantined", exc.field, exc.reason, size)
    except Exception as exc:  # a reader bug must not hide the other records
        return CheckResult(path, "quarantined", "reader", f"unexpected {type(exc).__name__}: "
                                                          f"{exc}", size)
    dropped = rec.metadata.get("dropped_leads") or []
    notes = list(rec.flags) + ([f"dropped channels {dropped}"] if dropped else [])
    return CheckResult(path, "flagged" if rec.flags else "ok", "", "; ".join(notes), size)


def _check_chunk(paths: list[str], settings: CheckSettings) -> list[CheckResult]:
    """Worker task: :func:`check_record` for each path of one chunk, in order."""
    return [check_record(p, settings.policy, settings.fs, settings.n_samples, settings.limits)
            for p in paths]


def default_workers() -> int:
    """The CPUs this process may run on (``os.sched_getaffinity`` where available)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def chunk_size_for(n: int, workers: int) -> int:
    """Records per task: ~16 tasks per worker, between 4 and 256 records."""
    return max(4, min(256, n // max(1, workers * 16) or 1))


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def iter_chunk_results(records: list[str], settings: CheckSettings, workers: int,
                       chunk_size: Optional[int] = None) -> Iterator[list[CheckResult]]:
    """Results of ``records`` chunk by chunk, in input order; ``workers`` > 1 uses a process
    pool with a bounded number of chunks in flight, 1 reads in this process.

    Raises:
        RuntimeError: a worker process died (a reader crashed the interpreter); rerun with
            ``workers=1`` to find the record.
    """
    size = chunk_size or chunk_size_for(len(records), workers)
    chunks = _chunks(records, size)
    if workers <= 1 or len(records) <= size:
        for chunk in chunks:
            yield _check_chunk(chunk, settings)
        return
    ctx = multiprocessing.get_context(START_METHOD)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    try:
        pending = deque(pool.submit(_check_chunk, c, settings)
                        for _, c in zip(range(workers * IN_FLIGHT_PER_WORKER), chunks))
        while pending:
            try:
                done = pending.popleft().result()
            except BrokenProcessPool as exc:
                raise RuntimeError(f"a data-check worker process died ({exc}); rerun with "
                                   f"--workers 1 to see which record crashes the reader") \
                    from exc
            nxt = next(chunks, None)
            if nxt is not None:
                pending.append(pool.submit(_check_chunk, nxt, settings))
            yield done
    finally:  # on Ctrl-C or an early stop, drop the queued chunks instead of finishing them
        pool.shutdown(wait=True, cancel_futures=True)


def _problem(entry: ScanEntry) -> CheckResult:
    return CheckResult(entry.path, "quarantined", entry.problem, entry.reason)


def check_report(paths: Iterable[str | Path], settings: CheckSettings, workers: int = 1,
                 progress: Optional[ProgressLine] = None,
                 chunk_size: Optional[int] = None) -> CheckReport:
    """Scan ``paths`` (:func:`ecglm.data.readers.scan_paths`) and check every record with
    ``workers`` processes; ``progress`` (if given) is updated after each chunk."""
    t0 = time.monotonic()
    scan = scan_paths(paths)
    results: list[Optional[CheckResult]] = [None if not e.problem else _problem(e)
                                            for e in scan.entries]
    todo = [i for i, e in enumerate(scan.entries) if not e.problem]
    if progress is not None:
        progress.note(f"listed {len(todo)} records, {len(results) - len(todo)} problems and "
                      f"{scan.other_files} other files in {time.monotonic() - t0:.1f} s")
    if progress is not None:
        progress.start(len(results), done=len(results) - len(todo))
    k = 0
    for chunk in iter_chunk_results([scan.entries[i].path for i in todo], settings, workers,
                                    chunk_size):
        for res in chunk:
            results[todo[k]] = res
            k += 1
        if progress is not None:
            progress.update(len(chunk), sum(r.n_bytes for r in chunk))
    if progress is not None:
        progress.close()
    return CheckReport([r for r in results if r is not None], scan.other_files)


def check_paths(paths: Iterable[str | Path], policy: NormalizeConfig, fs: int,
                n_samples: int, limits: HeaderLimits = DEFAULT_LIMITS,
                workers: int = 1) -> list[CheckResult]:
    """:func:`check_record` for every record found under ``paths``, plus the problems found
    while listing, in input order."""
    return check_report(paths, CheckSettings(policy, fs, n_samples, limits), workers).results


def summary(results: list[CheckResult], other_files: int = 0) -> dict[str, object]:
    """``{"in": N, "ok": K, "quarantined": Q, "flagged": F, "reasons": {field: count},
    "other_files": M}`` with ``N == K + Q`` (flagged counts as ok; ``reasons`` counts the
    quarantined entries per field, e.g. ``file``, ``symlink``, ``header.sig_len``)."""
    bad = [r for r in results if r.status == "quarantined"]
    reasons = Counter(r.field for r in bad)
    return {"in": len(results), "ok": len(results) - len(bad), "quarantined": len(bad),
            "flagged": sum(r.status == "flagged" for r in results),
            "reasons": dict(sorted(reasons.items())), "other_files": other_files}


def format_table(results: list[CheckResult], width: int = 60) -> str:
    """Plain-text table ``record | status | reason`` (record paths cut from the left to
    ``width`` characters)."""
    def cut(text: str) -> str:
        return text if len(text) <= width else "..." + text[-(width - 3):]

    rows = [(cut(r.record), r.status, f"{r.field}: {r.reason}" if r.field else r.reason)
            for r in results]
    w0 = max([len("record")] + [len(a) for a, _, _ in rows])
    w1 = max([len("status")] + [len(b) for _, b, _ in rows])
    lines = [f"{'record':<{w0}}  {'status':<{w1}}  reason", f"{'-' * w0}  {'-' * w1}  ------"]
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows]
    return "\n".join(lines)


def run_check(paths: list[str], policy: NormalizeConfig, fs: int, n_samples: int,
              limits: HeaderLimits = DEFAULT_LIMITS, workers: int = 1,
              progress: Optional[bool] = None, stream: Optional[TextIO] = None) -> str:
    """Table plus the summary JSON as the last line (what ``ecglm data check`` prints).

    ``progress``: a progress line on ``stream`` (files done/total, files/s, MB/s, ETA);
    ``None`` shows it only when ``stream`` is a terminal. ``stream`` defaults to stderr.
    """
    line = ProgressLine.for_stream(stream, progress)
    report = check_report(paths, CheckSettings(policy, fs, n_samples, limits), workers, line)
    return (format_table(report.results) + "\n"
            + json.dumps(summary(report.results, report.other_files)))
