"""Per-record summaries of grounding features, and a short text for prompts.

:func:`summarize` reduces the ``(n_beats, 12)`` sequences of :class:`GroundingFeatures` to
medians (overall and per lead) plus rule-based notable findings; everything in it is
JSON-serialisable (NaN becomes ``None``). :func:`summary_text` words it in a few lines.

Finding rules (thresholds are common adult reference limits, not a diagnosis):

* rate: below 60 bpm "slow rate", above 100 bpm "fast rate";
  RR coefficient of variation above 12 % "irregular RR intervals";
* P waves: found in under half the beats in II "P waves not consistently seen";
  PR spread (IQR) above 40 ms "variable PR interval", otherwise PR above 200 ms
  "long PR", below 120 ms "short PR"; in II, P above 0.25 mV "tall P wave", P above 120 ms
  "broad P wave";
* QRS 120 ms or more "wide QRS"; QRS peak-to-peak under 0.5 mV in all six limb leads
  "low QRS voltage in limb leads";
* QTc above 460 ms "long QTc", below 350 ms "short QTc";
* per lead: the most frequent ST form if elevated or depressed (:data:`ST_FORMS`; depression
  not reported for aVR, where it mostly mirrors the lateral leads); T below
  -0.1 mV "inverted T" (not reported for aVR, III and V1, where it is a common normal
  variant); ``|T|`` under 0.05 mV "flat T" in I, II and V3-V6.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ecglm.data.canonical import LEADS
from ecglm.features.grounding import FEATURE_NAMES, ST_FORMS, GroundingFeatures

_LIMB = tuple(range(6))
_T_INVERSION_IGNORED = ("aVR", "III", "V1")
_FLAT_T_LEADS = ("I", "II", "V3", "V4", "V5", "V6")
_AMPLITUDES = ("p_amplitude", "qrs_amplitude", "t_amplitude")
_GLOBAL = ("heart_rate", "rr1", "rr2", "p_duration", "pr_interval", "qrs_duration",
           "t_duration", "st_duration", "qt_interval", "qtc_interval")
_II = LEADS.index("II")


def _median(x: np.ndarray) -> float:
    """Median of the finite values of ``x`` (NaN when there are none)."""
    v = np.asarray(x, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else float("nan")


def _clean(value: float, digits: int) -> float | None:
    return None if not np.isfinite(value) else round(float(value), digits)


def _digits(name: str) -> int:
    return 3 if name in _AMPLITUDES or name == "st_deviation" else 1


def _mode_form(codes: np.ndarray) -> str | None:
    """Most frequent ST form name in ``codes`` (None when none is measurable)."""
    v = codes[np.isfinite(codes)].astype(np.int64)
    if not v.size:
        return None
    return ST_FORMS[int(np.bincount(v, minlength=len(ST_FORMS)).argmax())]


def _lead_findings(f: GroundingFeatures, lead: int) -> list[str]:
    """Notable findings of one lead (see module doc)."""
    name = LEADS[lead]
    out: list[str] = []
    form = _mode_form(f.st_form[:, lead])
    st = _median(f.st_deviation[:, lead])
    if form == "elevated":
        out.append(f"ST elevation ({st:+.2f} mV)")
    elif form is not None and form.startswith("depressed") and name != "aVR":
        out.append(f"ST depression, {form.split('_')[1]} ({st:+.2f} mV)")
    t_amp = _median(f.t_amplitude[:, lead])
    if np.isfinite(t_amp):
        if t_amp < -0.1 and name not in _T_INVERSION_IGNORED:
            out.append(f"inverted T ({t_amp:+.2f} mV)")
        elif abs(t_amp) < 0.05 and name in _FLAT_T_LEADS:
            out.append(f"flat T ({t_amp:+.2f} mV)")
    if lead == _II:
        p_amp, p_dur = _median(f.p_amplitude[:, lead]), _median(f.p_duration[:, lead])
        if np.isfinite(p_amp) and p_amp > 0.25:
            out.append(f"tall P wave ({p_amp:.2f} mV)")
        if np.isfinite(p_dur) and p_dur > 120.0:
            out.append(f"broad P wave ({p_dur:.0f} ms)")
    return out


def _global_findings(f: GroundingFeatures, medians: dict[str, float], rr_cv: float
                     ) -> list[str]:
    """Record-level notable findings (see module doc)."""
    out: list[str] = []
    hr = medians["heart_rate"]
    if np.isfinite(hr) and hr < 60:
        out.append(f"slow rate ({hr:.0f} bpm)")
    elif np.isfinite(hr) and hr > 100:
        out.append(f"fast rate ({hr:.0f} bpm)")
    if np.isfinite(rr_cv) and rr_cv > 0.12:
        out.append(f"irregular RR intervals (variation {100 * rr_cv:.0f}%)")
    p_seen = float(np.isfinite(f.p_amplitude[:, _II]).mean()) if f.n_beats else 0.0
    pr_ii = f.pr_interval[:, _II]
    pr_ii = pr_ii[np.isfinite(pr_ii)]
    if p_seen < 0.5:
        out.append("P waves not consistently seen")
    else:
        pr = medians["pr_interval"]
        if pr_ii.size >= 3 and np.subtract(*np.percentile(pr_ii, [75, 25])) > 40.0:
            out.append("variable PR interval")  # a median PR would mean little then
        elif np.isfinite(pr) and pr > 200:
            out.append(f"long PR ({pr:.0f} ms)")
        elif np.isfinite(pr) and pr < 120:
            out.append(f"short PR ({pr:.0f} ms)")
    qrs = medians["qrs_duration"]
    if np.isfinite(qrs) and qrs >= 120:
        out.append(f"wide QRS ({qrs:.0f} ms)")
    limb = [_median(f.qrs_amplitude[:, lead]) for lead in _LIMB]
    if all(np.isfinite(v) and v < 0.5 for v in limb):
        out.append("low QRS voltage in limb leads")
    qtc = medians["qtc_interval"]
    if np.isfinite(qtc) and qtc > 460:
        out.append(f"long QTc ({qtc:.0f} ms)")
    elif np.isfinite(qtc) and qtc < 350:
        out.append(f"short QTc ({qtc:.0f} ms)")
    return out


def summarize(features: GroundingFeatures) -> dict[str, Any]:
    """Record-level summary of grounding features (JSON-serialisable).

    Returns:
        ``{"n_beats", "duration_s", "rr_variation", "median": {feature: value},
        "per_lead": {lead: {feature: value, "st_form": name, "st_deviation": mV}},
        "findings": {"record": [str], "leads": {lead: [str]}}}``. ``median`` holds the
        timing features (median over beats and leads); ``per_lead`` all 14 features
        (median over beats; ``st_form`` as the most frequent form name). Units as in
        :data:`ecglm.features.grounding.FEATURE_UNITS`; ``None`` where not measurable.
    """
    f = features
    medians = {name: _median(getattr(f, name)) for name in _GLOBAL}
    rr = f.rr1[:, 0]
    rr = rr[np.isfinite(rr)]
    rr_cv = float(np.std(rr) / np.mean(rr)) if rr.size >= 2 else float("nan")
    per_lead: dict[str, dict[str, Any]] = {}
    for lead, name in enumerate(LEADS):
        row: dict[str, Any] = {}
        for feat in FEATURE_NAMES:
            if feat == "st_form":
                row[feat] = _mode_form(f.st_form[:, lead])
            else:
                row[feat] = _clean(_median(getattr(f, feat)[:, lead]), _digits(feat))
        row["st_deviation"] = _clean(_median(f.st_deviation[:, lead]), 3)
        per_lead[name] = row
    lead_findings = {LEADS[lead]: found for lead in range(12)
                     if (found := _lead_findings(f, lead))}
    return {
        "n_beats": f.n_beats,
        "duration_s": round(f.n_samples / f.fs, 3),
        "rr_variation": _clean(rr_cv, 3),
        "median": {k: _clean(v, 1) for k, v in medians.items()},
        "per_lead": per_lead,
        "findings": {"record": _global_findings(f, medians, rr_cv) if f.n_beats else [],
                     "leads": lead_findings},
    }


def _fmt(value: float | None, unit: str, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:.{digits}f} {unit}"


def summary_text(summary: dict[str, Any]) -> str:
    """A few plain sentences describing a :func:`summarize` result (for LLM prompts)."""
    n = summary["n_beats"]
    if n == 0:
        return f"{summary['duration_s']:.1f} s recording: no heartbeats could be measured."
    m = summary["median"]
    lines = [f"{summary['duration_s']:.1f} s recording, {n} beat{'s' if n > 1 else ''}, "
             f"heart rate {_fmt(m['heart_rate'], 'bpm')}."]
    lines.append("Median intervals: PR " + _fmt(m["pr_interval"], "ms") + ", QRS "
                 + _fmt(m["qrs_duration"], "ms") + ", QT " + _fmt(m["qt_interval"], "ms")
                 + ", QTc " + _fmt(m["qtc_interval"], "ms") + ".")
    ii = summary["per_lead"]["II"]
    waves = []
    if ii["p_amplitude"] is not None:
        waves.append(f"P {ii['p_amplitude']:.2f} mV, {_fmt(ii['p_duration'], 'ms')}")
    if ii["qrs_amplitude"] is not None:
        waves.append(f"QRS {ii['qrs_amplitude']:.2f} mV peak-to-peak")
    if ii["t_amplitude"] is not None:
        waves.append(f"T {ii['t_amplitude']:.2f} mV")
    if waves:
        lines.append("Lead II: " + "; ".join(waves) + ".")
    record = summary["findings"]["record"]
    leads = summary["findings"]["leads"]
    if not record and not leads:
        lines.append("No measurement outside the usual limits.")
    else:
        if record:
            lines.append("Notable: " + "; ".join(record) + ".")
        by_finding: dict[str, list[str]] = {}
        for lead, found in leads.items():
            for item in found:
                by_finding.setdefault(item.split(" (")[0], []).append(
                    f"{lead} ({item[item.find('(') + 1:-1]})" if "(" in item else lead)
        for finding, where in by_finding.items():
            lines.append(f"{finding[0].upper()}{finding[1:]} in {', '.join(where)}.")
    return " ".join(lines)
