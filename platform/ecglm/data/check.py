"""``ecglm data check PATH...``: read every record under the paths and say which are usable.

Every record found is accounted for: ``in == ok + quarantined`` (a flagged record is ``ok``;
its flags are listed in the reason column).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

from ecglm.config.schema import NormalizeConfig
from ecglm.data.errors import RecordError
from ecglm.data.readers import find_records, read_record


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one record: ``status`` ``ok``, ``flagged`` (usable, see ``reason``) or
    ``quarantined`` (unusable; ``field`` and ``reason`` say why)."""

    record: str
    status: Literal["ok", "flagged", "quarantined"]
    field: str
    reason: str


def check_record(path: str, policy: NormalizeConfig, fs: int, n_samples: int) -> CheckResult:
    """Read and normalise one record; never raises for a bad record."""
    try:
        rec = read_record(path, policy, fs, n_samples)
    except RecordError as exc:
        return CheckResult(path, "quarantined", exc.field, exc.reason)
    except Exception as exc:  # a reader bug must not hide the other records
        return CheckResult(path, "quarantined", "reader", f"unexpected {type(exc).__name__}: "
                                                          f"{exc}")
    dropped = rec.metadata.get("dropped_leads") or []
    notes = list(rec.flags) + ([f"dropped channels {dropped}"] if dropped else [])
    return CheckResult(path, "flagged" if rec.flags else "ok", "", "; ".join(notes))


def check_paths(paths: Iterable[str | Path], policy: NormalizeConfig, fs: int,
                n_samples: int) -> list[CheckResult]:
    """:func:`check_record` for every record :func:`find_records` finds under ``paths``."""
    return [check_record(r, policy, fs, n_samples) for r in find_records(paths)]


def summary(results: list[CheckResult]) -> dict[str, int]:
    """``{"in": N, "ok": K, "quarantined": Q}`` with ``N == K + Q`` (flagged counts as ok)."""
    bad = sum(r.status == "quarantined" for r in results)
    return {"in": len(results), "ok": len(results) - bad, "quarantined": bad}


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


def run_check(paths: list[str], policy: NormalizeConfig, fs: int, n_samples: int) -> str:
    """Table plus the summary JSON as the last line (what ``ecglm data check`` prints)."""
    results = check_paths(paths, policy, fs, n_samples)
    return format_table(results) + "\n" + json.dumps(summary(results))
