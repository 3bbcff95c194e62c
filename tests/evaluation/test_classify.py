"""PTB-XL superclass classification: labels from SCP codes, zero-shot prototypes, text labels."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecglm.evaluation.classify import (SUPERCLASSES, build_prototypes, extract_labels,
                                       superclass_matrix, text_classification_eval,
                                       text_label_matrix, zero_shot_eval, zero_shot_scores)
from tests.helpers import tiny_config


@pytest.fixture
def statements() -> pd.DataFrame:
    """The rows of ``scp_statements.csv`` that the synthetic set and these tests use."""
    rows = {  # code: diagnostic, form, rhythm, diagnostic_class, diagnostic_subclass
        "NORM": (1.0, None, None, "NORM", "NORM"), "1AVB": (1.0, None, None, "CD", "_AVB"),
        "IVCD": (1.0, None, None, "CD", "IVCD"), "IMI": (1.0, None, None, "MI", "IMI"),
        "LVH": (1.0, None, None, "HYP", "LVH"), "NDT": (1.0, 1.0, None, "STTC", "STTC"),
        "SR": (None, None, 1.0, None, None), "AFIB": (None, None, 1.0, None, None),
        "SBRAD": (None, None, 1.0, None, None), "STACH": (None, None, 1.0, None, None),
        "LVOLT": (None, 1.0, None, None, None)}
    return pd.DataFrame.from_dict(rows, orient="index", columns=[
        "diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass"])


def test_superclass_labels_and_likelihood_threshold(statements: pd.DataFrame) -> None:
    codes = ['{"NORM": 100.0, "SR": 0.0}', {"IMI": 35.0, "LVH": 50.0, "SR": 0.0},
             {"1AVB": 100.0, "IVCD": 80.0, "NDT": 100.0}, {"LVOLT": 0.0, "XYZ": 100.0}]
    y = superclass_matrix(codes, statements, min_likelihood=50.0)
    assert y.tolist() == [[1, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 1, 1, 0], [0, 0, 0, 0, 0]]
    assert superclass_matrix(codes[1:2], statements, 0.0).tolist() == [[0, 1, 0, 0, 1]]


def test_synthetic_records_superclasses(statements: pd.DataFrame) -> None:
    from ecglm.data.synthetic import simulate_labels

    recs = simulate_labels(60, seed=0)
    y = superclass_matrix([r.scp_codes for r in recs], statements)
    for r, row in zip(recs, y):
        assert row[0] == ("NORM" in r.scp_codes)
        assert row[3] == bool({"1AVB", "IVCD"} & set(r.scp_codes))
    assert y[:, 0].any() and y[:, 3].any() and not y[:, [1, 2, 4]].any()


def test_prototypes_separate_clustered_embeddings() -> None:
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((5, 16)) * 3

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = (rng.random((n, 5)) < 0.3).astype(int)
        y[y.sum(1) == 0, 0] = 1
        return y @ centers + 0.3 * rng.standard_normal((n, 16)), y

    (xa, ya), (xb, yb) = sample(200), sample(100)
    protos = build_prototypes(xa, ya)
    assert protos.pos.shape == (5, 16)
    assert np.allclose(np.linalg.norm(protos.pos, axis=1), 1.0)
    s = zero_shot_scores(xb, protos)
    assert s.shape == (100, 5) and np.all(np.abs(s) <= 2.0 + 1e-9)
    m = zero_shot_eval(xa, ya, xb, yb)
    assert m["macro_auc"] > 0.95 and m["macro_f1"] > 0.7 and m["n_labels_used"] == 5
    rand = zero_shot_eval(xa, ya, rng.standard_normal((100, 16)), yb)
    assert 0.3 < rand["macro_auc"] < 0.7


def test_zero_shot_on_synthetic_signals_with_tiny_encoder(statements: pd.DataFrame) -> None:
    import torch

    from ecglm.data.synthetic import simulate_labels, simulate_signal
    from ecglm.evaluation.classify import embed_signals
    from ecglm.models.encoders import build_encoder

    cfg = tiny_config(Path("/tmp/unused"))
    recs = simulate_labels(48, seed=1)
    sig = np.stack([simulate_signal(r, 1, 100, 1000) for r in recs]).astype(np.float32)
    torch.manual_seed(0)
    emb = embed_signals(build_encoder(cfg.encoder).eval(), sig, batch=8)
    assert emb.shape == (48, cfg.encoder.d_model)
    y = superclass_matrix([r.scp_codes for r in recs], statements)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # MI/STTC/HYP absent: dropped
        m = zero_shot_eval(emb[:32], y[:32], emb[32:], y[32:])
    assert 0.0 <= m["macro_auc"] <= 1.0 and 0.0 <= m["hamming_loss"] <= 1.0
    assert m["n_labels_used"] <= 2


@pytest.mark.parametrize("text,labels", [
    ("Sinus rhythm. Normal ECG.", ["NORM"]),
    ("sinusrhythmus normales ekg", ["NORM"]),
    ("Abnormal ECG: left bundle branch block, LVH.", ["CD", "HYP"]),
    ("Inferior myocardial infarction, age undetermined; ST depression in V5-V6.", ["MI", "STTC"]),
    ("No evidence of infarction. First degree AV block.", ["CD"]),
    ("sinusrhythmus unvollständiger rechtsschenkelblock", ["CD"]),
    ("t-negativierung in v4-v6, verdacht auf linkshypertrophie", ["STTC", "HYP"]),
    ("sinus tachycardia, rate 120 bpm.", []),
    ("", []),
])
def test_extract_labels(text: str, labels: list[str]) -> None:
    assert extract_labels(text) == labels


def test_text_classification_metrics() -> None:
    texts = ["normal ecg", "anterior infarction", "lbbb and lvh", "st depression"]
    y = np.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 1, 1], [0, 0, 1, 0, 0]])
    assert (text_label_matrix(texts) == y).all()
    m = text_classification_eval(texts, y)
    assert m["macro_f1"] == 1.0 and m["hamming_loss"] == 0.0 and "macro_auc" not in m
    assert len(SUPERCLASSES) == 5


def test_real_ptbxl_superclasses(shared_data) -> None:
    from ecglm.data.ptbxl import load_ptbxl_catalog
    from ecglm.evaluation.classify import find_statements

    st = find_statements([shared_data])
    cat = load_ptbxl_catalog(shared_data, 200)
    y = superclass_matrix(cat["scp_codes"].tolist(), st, min_likelihood=50.0)
    assert y.shape == (len(cat), 5)
    first = cat.index[cat["ecg_id"] == 1][0]
    assert y[first].tolist() == [1, 0, 0, 0, 0]          # ecg 1: NORM 100
    prev = y.mean(0)
    assert prev[0] > 0.3 and (prev[1:] > 0).all()        # every superclass occurs
    ref = text_classification_eval(cat["report"].tolist(), y)
    assert ref["macro_f1"] > 0.4                          # keyword matcher on real reports
    with pytest.raises(FileNotFoundError, match="scp_statements"):
        find_statements([shared_data / "nowhere"])
