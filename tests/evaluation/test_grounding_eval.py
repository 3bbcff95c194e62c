"""Grounding evaluator: claim parsing (synthetic text) and verdicts on real LUDB records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecglm.evaluation.grounding import (TERRITORIES, Claim, Tolerances, check_claim,
                                        ground_text, grounding_metrics, measured_value,
                                        parse_claims)


def _c(text: str) -> list[tuple]:
    return [(c.feature, c.value, c.qualifier, c.lead, c.negated) for c in parse_claims(text)]


def test_parse_numbers_units_and_qualifiers() -> None:
    got = _c("Sinus rhythm, heart rate of 72 bpm. QRS duration 110 ms. "
             "PR interval is prolonged (220 ms). QTc 460 ms. QT interval 0.40 s.")
    assert got == [("heart_rate", 72.0, None, None, False),
                   ("qrs_duration", 110.0, None, None, False),
                   ("pr_interval", 220.0, "high", None, False),
                   ("qtc_interval", 460.0, None, None, False),
                   ("qt_interval", 400.0, None, None, False)]
    assert _c("Wide QRS complexes; short PR interval; normal QTc.") == [
        ("qrs_duration", None, "high", None, False), ("pr_interval", None, "low", None, False),
        ("qtc_interval", None, "normal", None, False)]
    assert _c("Sinus bradycardia at 48 bpm.") == [("heart_rate", 48.0, "low", None, False)]
    assert _c("Regular rhythm at 88 beats per minute.") == [
        ("heart_rate", 88.0, None, None, False)]
    assert _c("RR interval 820 ms.") == [("rr1", 820.0, None, None, False)]
    # the qualifier nearest to each name wins; an atrial rate is not the heart rate
    assert _c("Normal QRS duration and prolonged PR interval.") == [
        ("qrs_duration", None, "normal", None, False), ("pr_interval", None, "high", None, False)]
    assert _c("Atrial rate 300 bpm, ventricular rate 75 bpm.") == [
        ("heart_rate", 75.0, None, None, False)]


def test_parse_leads_st_and_t() -> None:
    assert _c("ST elevation in V2.") == [("st_deviation", None, "high", "V2", False)]
    assert _c("ST depression of 1 mm in leads V4-V6.") == [
        ("st_deviation", -0.1, "low", lead, False) for lead in ("V4", "V5", "V6")]
    assert _c("No ST elevation.") == [("st_deviation", None, "high", None, True)]
    assert _c("T wave inversion in III and aVF.") == [
        ("t_inversion", None, None, "III", False), ("t_inversion", None, None, "aVF", False)]
    assert _c("P wave amplitude 0.15 mV in lead II, QT interval 400 ms.") == [
        ("p_amplitude", 0.15, None, "II", False), ("qt_interval", 400.0, None, None, False)]
    assert _c("The QRS complexes look odd. I am not sure.") == []  # nothing checkable


@pytest.fixture(scope="module")
def ludb_features(shared_data: Path):
    from ecglm.data.records import read_wfdb
    from ecglm.features import grounding_features

    out = {}
    for rec in ("1", "2", "5"):
        x, fs = read_wfdb(shared_data / "ludb" / "data" / rec, 500, 5000)
        out[rec] = grounding_features(x, fs)
    return out


def _own_text(f) -> tuple[str, str]:
    """(statements from the record's own features, the same with perturbed values)."""
    def m(name: str, lead: str | None = None) -> float:
        v = measured_value(f, name, lead)
        assert v is not None, name
        return v

    hr, pr, qrs, qtc = m("heart_rate"), m("pr_interval"), m("qrs_duration"), m("qtc_interval")
    t_v2 = m("t_amplitude", "V2")
    devs = {lead: m("st_deviation", lead) for lead in ("I", "II", "V2", "V3", "V4", "V5")}
    lead = max(devs, key=lambda k: abs(devs[k]))
    dev = devs[lead]
    st = (f"ST {'elevation' if dev >= 0 else 'depression'} of {abs(dev):.2f} mV in {lead}."
          if abs(dev) >= Tolerances().st_mv else "No ST elevation.")
    own = (f"Heart rate of {hr:.0f} bpm. PR interval {pr:.0f} ms. QRS duration {qrs:.0f} ms. "
           f"QTc {qtc:.0f} ms. T wave amplitude {t_v2:.2f} mV in V2. {st}")
    bad = (f"Heart rate of {hr + 35:.0f} bpm. PR interval {pr + 60:.0f} ms. "
           f"QRS duration {qrs + 50:.0f} ms. QTc {qtc - 70:.0f} ms. "
           f"T wave amplitude {t_v2 + 0.4:.2f} mV in V2. "
           f"ST {'depression' if dev >= 0 else 'elevation'} of 0.30 mV in {lead}.")
    return own, bad


def test_ludb_own_features_supported_perturbed_contradicted(ludb_features) -> None:
    scores = {}
    for rec, f in ludb_features.items():
        own, bad = _own_text(f)
        good = ground_text(own, f)
        verdicts = [v.verdict for v in good.verdicts]
        assert verdicts == ["supported"] * 6, [v.as_dict() for v in good.verdicts]
        wrong = ground_text(bad, f)
        assert [v.verdict for v in wrong.verdicts] == ["contradicted"] * 6, rec
        scores[rec] = (good.score, wrong.score)
    assert all(g == 1.0 and w == 0.0 for g, w in scores.values()), scores
    m = grounding_metrics([ground_text(_own_text(f)[0], f) for f in ludb_features.values()])
    assert m["n_claims"] == 18 and m["score"] == 1.0 and m["macro_score"] == 1.0


def test_ludb_qualifiers(ludb_features) -> None:
    f = ludb_features["1"]  # LUDB 1: sinus bradycardia (~46 bpm)
    assert ground_text("Sinus bradycardia.", f).verdicts[0].verdict == "supported"
    assert ground_text("Sinus tachycardia.", f).verdicts[0].verdict == "contradicted"
    assert ground_text("Normal QRS duration.", f).verdicts[0].verdict == "supported"
    assert ground_text("Wide QRS complexes.", f).verdicts[0].verdict == "contradicted"
    # no lead shows a clinically significant ST elevation in this record
    assert ground_text("No ST elevation.", f).verdicts[0].verdict == "supported"


def test_tolerances_and_unverifiable(ludb_features) -> None:
    f = ludb_features["2"]
    qrs = measured_value(f, "qrs_duration", None)
    assert qrs is not None
    near = Claim("x", "qrs_duration", qrs + 15.0)
    assert check_claim(near, f).verdict == "supported"
    assert check_claim(near, f, Tolerances(interval_ms=10.0)).verdict == "contradicted"
    # QT has no qualifier limits and no number: nothing to check
    assert check_claim(Claim("x", "qt_interval", None, "high"), f).verdict == "unverifiable"
    empty = ground_text("", f)
    assert empty.score is None and grounding_metrics([empty])["n_claims"] == 0.0
    assert np.isfinite(grounding_metrics([ground_text("QRS 80 ms.", f)])["claims_per_text"])


def test_territories(ludb_features) -> None:
    claims = parse_claims("ST elevation in the inferior leads. QRS amplitude 1.5 mV in the "
                          "precordial leads.")
    assert [(c.feature, c.lead, c.territory) for c in claims] == [
        ("st_deviation", None, "inferior"), ("qrs_amplitude", None, "precordial")]
    for f in ludb_features.values():
        devs = [measured_value(f, "st_deviation", lead) for lead in TERRITORIES["inferior"]]
        expected = "supported" if max(d for d in devs if d is not None) >= 0.05 \
            else "contradicted"
        assert check_claim(claims[0], f).verdict == expected
        qrs = np.nanmedian(f.qrs_amplitude[:, 6:])
        got = check_claim(Claim("x", "qrs_amplitude", float(qrs), territory="precordial"), f)
        assert got.verdict == "supported" and got.measured == pytest.approx(qrs)
