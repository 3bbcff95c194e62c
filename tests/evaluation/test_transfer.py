"""Zero-shot transfer to CinC 2021: SNOMED mapping, real records, metrics and HTML."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecglm.evaluation.classify import SUPERCLASSES, find_statements, superclass_matrix
from ecglm.evaluation.transfer import (SNOMED_TO_SUPERCLASS, load_cinc2021, snomed_labels,
                                       transfer_eval, transfer_html)


def _row(dx: list[str]) -> list[str] | None:
    y, _ = snomed_labels(dx)
    return None if y is None else [c for c, v in zip(SUPERCLASSES, y) if v]


def test_snomed_mapping_rules() -> None:
    assert _row(["426783006"]) == ["NORM"]
    assert _row(["426783006", "59118001"]) == ["CD"]  # sinus rhythm + RBBB is not NORM
    assert _row(["284470004", "164934002", "698252002"]) == ["STTC", "CD"]
    assert _row(["164873001"]) == ["HYP"] and _row(["164865005"]) == ["MI"]
    assert _row(["427084000"]) is None  # rhythm only: NORM status unknown
    y, why = snomed_labels(["426434006", "59931005"])
    assert y is None and "426434006" in why
    assert set(SNOMED_TO_SUPERCLASS.values()) <= set(SUPERCLASSES)


def _embed(signals: np.ndarray) -> np.ndarray:
    """A cheap hand-made 'encoder': per-lead spread and mean slope (24-d)."""
    return np.concatenate([signals.std(axis=2), np.abs(np.diff(signals, axis=2)).mean(axis=2)],
                          axis=1)


@pytest.fixture(scope="module")
def cinc(shared_data: Path):
    root = shared_data / "cinc2021"
    if not any(root.glob("*.hea")):
        pytest.skip(f"no CinC 2021 records under {root}")
    return load_cinc2021(root, 500, 5000)


def test_load_real_cinc2021(cinc) -> None:
    assert len(cinc.record_ids) >= 30 and cinc.signals.shape == (len(cinc.record_ids), 12, 5000)
    assert cinc.y.shape == (len(cinc.record_ids), 5) and cinc.y.sum(axis=1).min() >= 1
    assert np.isfinite(cinc.signals).all()
    assert {"PTB-XL", "Georgia (G12EC)"} <= set(cinc.sources)
    assert len(cinc.record_ids) + len(cinc.excluded) == 50
    assert all(r for r in cinc.excluded.values())


def test_transfer_metrics_from_ptbxl_prototypes(cinc, shared_data: Path) -> None:
    import pandas as pd

    from ecglm.data.records import read_wfdb

    db = pd.read_csv(shared_data / "ptbxl" / "ptbxl_database.csv", index_col="ecg_id")
    ids = [i for i in range(1, 121) if db.loc[i, "strat_fold"] <= 8]
    sig = np.stack([read_wfdb(shared_data / "ptbxl" / "records500" / "00000" / f"{i:05d}_hr",
                              500, 5000)[0] for i in ids])
    statements = find_statements([shared_data])
    y_tr = superclass_matrix([db.loc[i, "scp_codes"].replace("'", '"') for i in ids],
                             statements)
    res = transfer_eval(_embed(sig), y_tr, _embed(cinc.signals), cinc)
    m = res["metrics"]
    assert 0.0 <= m["macro_auc"] <= 1.0 and 0.0 <= m["macro_f1"] <= 1.0
    assert m["n_records"] == len(cinc.record_ids) and m["n_labels_used"] == len(
        res["classes_used"]) >= 3
    page = transfer_html("cinc2021", {"handmade": res})
    assert "<table>" in page and "cinc2021" in page and "macro_auc" in page


def test_transfer_section_wiring(cinc, shared_data: Path, monkeypatch) -> None:
    """``evaluation.transfer: cinc2021`` -> section metrics/HTML, with stand-in encoders."""
    from types import SimpleNamespace

    import ecglm.evaluation.classify as classify
    import ecglm.evaluation.sections as sections
    from ecglm.config import ExperimentConfig, apply_overrides, parse_cli_overrides
    from ecglm.data.records import read_wfdb

    ids = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    sig = np.stack([read_wfdb(shared_data / "ptbxl" / "records500" / "00000" / f"{i:05d}_hr",
                              500, 5000)[0] for i in ids])
    codes = ['{"NORM": 100}'] * 6 + ['{"IRBBB": 100, "NDT": 100}'] * 6
    train = classify.RecordSet(ids, sig, [""] * 12, codes)
    enc = SimpleNamespace(eval=lambda: enc)
    monkeypatch.setattr(sections, "read_records", lambda records, split: train)
    monkeypatch.setattr(sections, "embed_signals", lambda e, s: _embed(s))
    monkeypatch.setattr(sections, "load_retrieval_encoder", lambda folder: enc)
    cfg = apply_overrides(ExperimentConfig(), parse_cli_overrides([
        "evaluation.transfer=cinc2021", f"data.shared_root={shared_data}"]))
    inputs = sections.SectionInputs(cfg, Path("unused"), "", {}, Path("unused"), lambda: enc)
    (sec,) = [s for s in sections.build_sections(inputs) if s.key.startswith("transfer")]
    assert sec.key == "transfer/cinc2021"
    assert 0.0 <= sec.metrics["model/macro_auc"] <= 1.0
    assert sec.metrics["retrieval_encoder/n_records"] == len(cinc.record_ids)
    assert "Zero-shot transfer to cinc2021" in sec.html and sec.summary["root"].endswith(
        "cinc2021")
