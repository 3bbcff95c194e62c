"""Report-generation evaluation: generated vs reference reports with the text metrics, and
the nearest-neighbour baseline (copy the report of the closest training ECG).

The baseline uses the retrieval artifact's precomputed neighbours
(:attr:`ecglm.retrieval.build.RetrievalArtifact.neighbours`): for each evaluated record, the
reports of its top-k *other* training records (never itself or its patient), nearest first.
"""

from __future__ import annotations

import html
from typing import Any, Mapping, Optional, Sequence

from ecglm.evaluation.baselines import retrieved_report_baseline
from ecglm.evaluation.metrics import TextScorer

REPORT_KEYS = ("bleu1", "bleu4", "meteor", "rouge_l", "rouge1", "rouge2", "cider_d",
               "bertscore_f1")
"""Metrics shown in the report table (all of :meth:`TextScorer.score` go to the summary)."""


def clean_reports(texts: Sequence[str]) -> list[str]:
    """Reports with whitespace collapsed; ``None``/``nan`` become empty strings."""
    out = []
    for t in texts:
        s = "" if t is None else " ".join(str(t).split())
        out.append("" if s.lower() == "nan" else s)
    return out


def score_reports(predictions: Sequence[str], references: Sequence[str | Sequence[str]],
                  scorer: TextScorer, per_item: bool = False) -> dict[str, Any]:
    """Text metrics of N predicted reports against their reference(s).

    Items whose reference is empty are skipped (counted in ``n_skipped``).

    Returns:
        :meth:`TextScorer.score` output plus ``n`` and ``n_skipped``.
    """
    if len(predictions) != len(references):
        raise ValueError(f"reports: {len(predictions)} predictions, {len(references)} "
                         "references")
    hyps, refs = [], []
    for p, r in zip(predictions, references):
        rs = [r] if isinstance(r, str) else list(r)
        rs = [x for x in clean_reports(rs) if x]
        if rs:
            hyps.append(clean_reports([p])[0])
            refs.append(rs)
    out = scorer.score(hyps, refs, per_item=per_item) if hyps else {}
    out["n"] = float(len(hyps))
    out["n_skipped"] = float(len(predictions) - len(hyps))
    return out


def neighbour_baseline(ecg_ids: Sequence[int], reports: Sequence[str],
                       neighbours: Mapping[int, Sequence[str]], scorer: TextScorer
                       ) -> tuple[dict[str, Any], list[str]]:
    """Score the retrieved-report baseline on records ``ecg_ids`` with their own ``reports``.

    Returns:
        (metrics, the N baseline reports)
    """
    preds = retrieved_report_baseline([list(neighbours.get(int(e), [])) for e in ecg_ids])
    return score_reports(preds, list(reports), scorer), preds


def report_table_html(systems: Mapping[str, Mapping[str, Any]],
                      examples: Sequence[tuple[str, str]] = ()) -> str:
    """HTML table (system x metric) plus a few (reference, prediction) examples."""
    keys = [k for k in REPORT_KEYS if any(k in m for m in systems.values())]
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ["system", *keys, "n"])
    body = "".join(
        "<tr><td>" + html.escape(name) + "</td>"
        + "".join(f"<td>{float(m.get(k, float('nan'))):.3f}</td>" for k in keys)
        + f"<td>{int(m.get('n', 0))}</td></tr>" for name, m in systems.items())
    ex = "".join(f"<li><b>reference</b>: {html.escape(r)}<br><b>nearest neighbour</b>: "
                 f"{html.escape(p)}</li>" for r, p in examples)
    return f"<table><tr>{head}</tr>{body}</table>" + (f"<ul>{ex}</ul>" if ex else "")


def report_section_data(ecg_ids: Sequence[int], reports: Sequence[str],
                        neighbours: Mapping[int, Sequence[str]], scorer: TextScorer,
                        predictions: Optional[Mapping[str, Sequence[str]]] = None,
                        n_examples: int = 3) -> tuple[dict[str, dict[str, Any]], str]:
    """Metrics per system (``retrieved_report`` plus any given ``predictions``: name -> N
    generated reports) and the HTML for ``report.html``."""
    systems: dict[str, dict[str, Any]] = {}
    for name, preds in (predictions or {}).items():
        systems[name] = score_reports(list(preds), list(reports), scorer)
    systems["retrieved_report"], base = neighbour_baseline(ecg_ids, reports, neighbours, scorer)
    pairs = [(r, p) for r, p in zip(clean_reports(reports), base) if r][:n_examples]
    return systems, report_table_html(systems, pairs)
