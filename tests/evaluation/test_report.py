"""The HTML report is self-contained: every plot is an embedded PNG that decodes."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ecglm.evaluation.qa import Prediction, score
from ecglm.evaluation.report import pick_examples, verify_confusion, write_report


def _preds(flip: bool) -> list[Prediction]:
    out = []
    for i in range(12):
        gold = ["yes"] if i % 2 else ["no"]
        parsed = gold if (i % 3 or flip) else ["not sure"]
        qt = "single-verify" if i < 8 else "single-query"
        out.append(Prediction(i, qt, "scp_code", f"question {i}?", gold, ", ".join(parsed),
                              parsed, parsed == gold))
    return out


def test_report_embeds_decodable_pngs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sig = (rng.standard_normal((1, 12, 500)) * 0.1).astype(np.float32)
    rows = [SimpleNamespace(sample_id=i, signals=sig, n_ecg=1, n_samples=500,
                            retrieved_reports=("sinus rhythm", "normal ecg")) for i in range(12)]
    model, base = _preds(False), _preds(True)
    cm = verify_confusion(model)
    assert cm.sum() == 8 and cm[0, 2] + cm[1, 2] > 0
    ex = pick_examples(rows, model, 100.0, 2, decode=lambda b, n, t: b)
    path = write_report(tmp_path / "report.html", "test <report>", {"run": "abc"},
                        {"model": model, "majority": base},
                        {"model": score(model), "majority": score(base)}, ex)
    text = path.read_text()
    assert "test &lt;report&gt;" in text and "sinus rhythm" in text and "question 0?" in text
    uris = re.findall(r"src='data:image/png;base64,([^']+)'", text)
    assert len(uris) == 2 + 2          # em bars, confusion, two ECGs
    for u in uris:
        assert base64.b64decode(u)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in text and "https://" not in text
