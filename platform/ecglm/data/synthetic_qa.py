"""ECG-QA-style questions and files of the synthetic fallback dataset
(:mod:`ecglm.data.synthetic`), derived from the simulated labels so every answer is computable.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from ecglm.data.synthetic_signals import NOISES, RHYTHMS, SyntheticRecord

_NUMERIC_CLASSES = ["none", "p duration", "pr interval", "qrs duration", "qt corrected",
                    "qt interval", "rr interval"]
TEMPLATES: dict[int, dict] = {
    27: {"type": "single-verify", "attribute_type": "noise", "classes": ["no", "yes"],
         "text": ["Does this ECG show {a}?", "Is there {a} in this ECG?",
                  "Can {a} be seen on this recording?"]},
    68: {"type": "comparison_irrelevant-query", "attribute_type": "numeric_feature",
         "classes": _NUMERIC_CLASSES,
         "text": ["What numeric features of the second ECG now have become normal as compared "
                  "to the first ECG?",
                  "Which measurements that were abnormal in the first ECG are normal in the "
                  "second ECG?"]},
    69: {"type": "comparison_irrelevant-query", "attribute_type": "numeric_feature",
         "classes": _NUMERIC_CLASSES,
         "text": ["What numeric features of the second ECG are now considered abnormal values "
                  "as compared to the first ECG?",
                  "Which measurements of the second ECG are abnormal although they were normal "
                  "in the first ECG?"]},
    70: {"type": "comparison_irrelevant-query", "attribute_type": "numeric_feature",
         "classes": _NUMERIC_CLASSES,
         "text": ["What numeric features of the second ECG are still abnormal as compared to "
                  "the first ECG?",
                  "Which measurements are abnormal in both the first and the second ECG?"]},
    101: {"type": "single-verify", "attribute_type": "scp_code", "classes": ["no", "yes"],
          "text": ["Does this ECG show {a}?", "Is the rhythm of this ECG {a}?",
                   "Would you describe the rhythm of this tracing as {a}?"]},
    102: {"type": "single-query", "attribute_type": "scp_code", "classes": sorted(RHYTHMS),
          "text": ["What rhythm does this ECG show?", "Which rhythm is seen on this ECG?",
                   "How would you classify the rhythm of this recording?"]},
}
"""Synthetic templates: 27 and 68-70 reuse ECG-QA's ids and wording; 101-102 are our own."""
_NUMERIC_ORDER = ("rr interval", "p duration", "pr interval", "qrs duration", "qt interval",
                  "qt corrected")


def numeric_comparison(first: SyntheticRecord, second: SyntheticRecord,
                       template_id: int) -> list[str]:
    """Answer of template 68 (became normal), 69 (became abnormal) or 70 (still abnormal).

    Features not measurable in either ECG never count; the empty set is ``["none"]``.
    """
    want = {68: (True, False), 69: (False, True), 70: (True, True)}[template_id]
    out = [f for f in _NUMERIC_ORDER if (first.abnormal(f), second.abnormal(f)) == want]
    return out or ["none"]


def _qa_items(records: list[SyntheticRecord], seed: int) -> list[tuple[dict, list[str]]]:
    """Items (ECG-QA schema, template wording) each with its paraphrase choices."""
    rng = np.random.default_rng([seed, 1])
    rows: list[tuple[int, list[int], list[str], list[str] | None, dict]] = []
    for rec in records:
        noise = NOISES[int(rng.integers(len(NOISES)))]
        if rec.noises and rng.random() < 0.5:
            noise = rec.noises[int(rng.integers(len(rec.noises)))]
        rows.append((27, [rec.ecg_id], ["yes" if noise in rec.noises else "no"], [noise],
                     {"a": noise}))
        # "sinus rhythm" is not asked of sinus brady/tachycardia records (ambiguous answer)
        sinus = rec.rhythm.startswith("sinus")
        others = [r for r in RHYTHMS if r != rec.rhythm and not (sinus and r == "sinus rhythm")]
        asked = rec.rhythm if rng.random() < 0.5 else others[int(rng.integers(len(others)))]
        rows.append((101, [rec.ecg_id], ["yes" if asked == rec.rhythm else "no"], [asked],
                     {"a": asked}))
        if rec.ecg_id % 2 == 0:
            rows.append((102, [rec.ecg_id], [rec.rhythm], None, {}))
    for _ in range(len(records) // 2):
        a, b = (records[int(i)] for i in rng.choice(len(records), size=2, replace=False))
        if a.patient_id == b.patient_id:
            continue
        tid = int(rng.choice([68, 69, 70]))
        rows.append((tid, [a.ecg_id, b.ecg_id], numeric_comparison(a, b, tid), None, {}))
    question_ids: dict[str, int] = {}
    out = []
    for sample_id, (tid, ecg_ids, answer, attribute, fill) in enumerate(rows, start=1):
        spec = TEMPLATES[tid]
        texts = [t.format(**fill) for t in spec["text"]]
        qid = question_ids.setdefault(texts[0], len(question_ids) + 1)
        item = {"template_id": tid, "question_id": qid, "sample_id": sample_id,
                "question_type": spec["type"], "attribute_type": spec["attribute_type"],
                "question": texts[0], "answer": answer, "ecg_id": ecg_ids,
                "attribute": attribute}
        out.append((item, texts[1:]))
    return out


def write_ecgqa_files(qa_root: Path, records: list[SyntheticRecord], seed: int) -> None:
    """Write the ECG-QA files of the synthetic set under ``qa_root`` (``ecgqa/ptbxl``)."""
    qa_root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 2])
    items = _qa_items(records, seed)
    template = [item for item, _ in items]
    paraphrased = [dict(item, question=alts[int(rng.integers(len(alts)))]) for item, alts in items]
    for name, data in (("template", template), ("paraphrased", paraphrased)):
        (qa_root / f"{name}_ecgid_le300.json").write_text(json.dumps(data, indent=1) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["template_id", "classes"])
    for tid in sorted(TEMPLATES):
        w.writerow([tid, repr(TEMPLATES[tid]["classes"])])
    (qa_root / "answers_for_each_template.csv").write_text(buf.getvalue())
    vocab = sorted({c for spec in TEMPLATES.values() for c in spec["classes"]} | {"not sure"})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "class"])
    w.writerows(enumerate(vocab))
    (qa_root / "answers.csv").write_text(buf.getvalue())
    split_of = {f: "train" for f in range(1, 9)} | {9: "valid", 10: "test"}
    for split in ("train", "valid", "test"):
        ids = [r.ecg_id for r in records if split_of[r.strat_fold] == split]
        (qa_root / f"{split}_ecgs.tsv").write_text(
            "".join(f"{i}\t{e}\n" for i, e in enumerate(ids)))
