"""Reference texts of a record: its report and the English descriptions of its SCP statements.

Shared by the per-record tasks' targets (:mod:`ecglm.tasks.report`) and by contrastive
pretraining (:mod:`ecglm.pretrain.data`), so a record gets the same text everywhere.
"""

from __future__ import annotations

import json
import re
from typing import Optional

import pandas as pd

from ecglm.data.catalogs.mimic import clean_report

_SENTENCE_END = re.compile(r"\.(?:\s+|$)")


def statement_texts(scp_codes: str | dict[str, float], statements: Optional[pd.DataFrame]
                    ) -> list[str]:
    """English descriptions of a record's SCP codes (most likely first; unknown codes and a
    missing table give ``[]``)."""
    codes = json.loads(scp_codes) if isinstance(scp_codes, str) else dict(scp_codes or {})
    if statements is None:
        return []
    out = []
    for code, _ in sorted(codes.items(), key=lambda kv: (-float(kv[1]), kv[0])):
        if code in statements.index:
            desc = str(statements.loc[code, "description"]).strip()
            if desc and desc.lower() != "nan" and desc not in out:
                out.append(desc)
    return out


def reference_text(report: str, scp_codes: str, source: str, statements: Optional[pd.DataFrame],
                   min_tokens: int) -> str:
    """Cleaned reference text of one record ("" when too short: the caller quarantines it).

    ``statements`` falls back to ``report`` when no statement table is available (synthetic
    data), ``both`` then equals ``report``. ``min_tokens`` applies to free text (``report``,
    ``both``, the fallback); statement descriptions only need to be non-empty.
    """
    parts: list[str] = []
    stmts = statement_texts(scp_codes, statements)
    if source in ("statements", "both") and stmts:
        parts.append(", ".join(stmts))
    if source in ("report", "both") or (source == "statements" and not stmts):
        parts.extend(_SENTENCE_END.split(str(report or "")))
    # MEIT's minimum length filters noisy free-text reports; curated statements ("normal
    # ECG, sinus rhythm") are short by nature and only need to be non-empty
    curated = source == "statements" and bool(stmts)
    return clean_report(parts, min_tokens=1 if curated else min_tokens)
