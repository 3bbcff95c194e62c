"""Feature grounding of generated ECG interpretations.

:func:`parse_claims` finds statements about measurable quantities in free text with regular
expressions; :func:`check_claims` compares each with the grounding features of the same ECG
(:func:`ecglm.features.grounding_features`) and gives a verdict: ``supported``,
``contradicted`` or ``unverifiable``. The grounding score is
``supported / (supported + contradicted)`` (None when nothing could be checked).

What is parsed (case-insensitive, one sentence at a time):

=====================  ==============================================  ====================
claim                  examples                                        feature
=====================  ==============================================  ====================
rate                   "heart rate of 72 bpm", "rate 72/min",          ``heart_rate`` (bpm)
                       "sinus bradycardia", "tachycardia", "88 bpm"
RR                     "RR interval 820 ms"                            ``rr1`` (ms)
intervals/durations    "PR interval is prolonged (220 ms)",            ``pr_interval``,
                       "QRS duration 110 ms", "QT 400 ms",             ``qrs_duration``,
                       "QTc 460 ms", "P wave duration 100 ms",         ``qt_interval``,
                       "T wave duration", "ST segment duration",       ``qtc_interval``, ...
                       "wide QRS", "short PR", "normal QTc"
amplitudes             "P wave amplitude 0.15 mV in II",               ``p_amplitude``,
                       "QRS amplitude 1.2 mV in V5", "T wave 3 mm"     ``qrs_amplitude``,
                                                                       ``t_amplitude`` (mV)
ST deviation           "ST elevation in V2", "ST depression of 1 mm    ``st_deviation`` (mV)
                       in V5 and V6", "no ST elevation"
T inversion            "T wave inversion in V1-V3", "inverted T waves  ``t_amplitude`` (mV)
                       in III"
=====================  ==============================================  ====================

Values: the first number with a unit (ms, s, bpm, /min, mV, mm, uV; ``1 mm = 0.1 mV``) after
the quantity's name in the same clause. Leads: ``in (lead|leads) X, Y and Z`` or ranges
``V1-V4`` after the name; a claim naming several leads is checked once per lead (one verdict
each); "in the inferior/lateral/anterior/septal/... leads" names a group (:data:`TERRITORIES`). Negation ("no", "without", "absence of" just before ST/T claims) flips the check.

Measured values (from :class:`GroundingFeatures`): the median over beats of the named lead,
or without a lead the median over beats and leads (intervals, rate); amplitudes without a lead
use lead II; ST and T-inversion claims without a lead hold when any lead (aVR excluded for
ST depression and T inversion) meets them. A NaN measurement makes the claim unverifiable.

Checks (:class:`Tolerances`): a number is supported when ``|claimed - measured|`` is within
the tolerance (default 20 ms for intervals and durations, 50 ms for RR, 10 bpm, 0.1 mV for
amplitudes, 0.05 mV for ST deviation) and contradicted otherwise. A qualifier ("prolonged",
"short", "normal", "bradycardia"...) is checked against the limits in :data:`NORMAL_LIMITS`:
supported beyond the limit, contradicted when the measurement is on the other side by more
than the tolerance, unverifiable in that border zone. A claim with both a number and a
qualifier is contradicted when either check is, supported when at least one is. ST elevation
(depression) is supported when the deviation is at least ``+st_mv`` (at most ``-st_mv``) and
contradicted otherwise; "no ST elevation/depression" is contradicted where the deviation
reaches the clinical thresholds of :mod:`ecglm.features.grounding` (0.1 mV, 0.2 mV in V2-V3;
-0.05 mV). T inversion is supported at ``t_amplitude <= -t_mv`` and contradicted at
``>= +t_mv``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Sequence

import numpy as np

from ecglm.data.records import LEADS
from ecglm.features.grounding import (ST_DEPRESSION_MV, ST_ELEVATION_MV, ST_ELEVATION_V2_V3_MV,
                                      GroundingFeatures)

Verdict = Literal["supported", "contradicted", "unverifiable"]
Qualifier = Literal["high", "low", "normal"]

NORMAL_LIMITS: dict[str, tuple[float, float]] = {
    "heart_rate": (60.0, 100.0), "rr1": (600.0, 1000.0), "pr_interval": (120.0, 200.0),
    "qrs_duration": (0.0, 120.0), "qtc_interval": (350.0, 460.0), "p_duration": (0.0, 120.0),
}
"""Common adult reference limits ``(low, high)`` used for qualifiers (units of the feature);
a feature not listed (e.g. ``qt_interval``) gets no qualifier check."""

TERRITORIES: dict[str, tuple[str, ...]] = {
    "inferior": ("II", "III", "aVF"), "lateral": ("I", "aVL", "V5", "V6"),
    "high lateral": ("I", "aVL"), "anterior": ("V1", "V2", "V3", "V4"),
    "anteroseptal": ("V1", "V2", "V3", "V4"), "septal": ("V1", "V2"),
    "precordial": ("V1", "V2", "V3", "V4", "V5", "V6"),
    "limb": ("I", "II", "III", "aVR", "aVL", "aVF"),
}
"""Lead groups for "in the inferior leads" style claims: ST/T claims hold when any lead of
the group meets them; interval and amplitude claims use the median over the group's leads."""
_TERRITORY = re.compile(r"\b(?:in|on|across)\s+(?:the\s+)?(?P<terr>high lateral|inferior|"
                        r"lateral|anteroseptal|anterior|septal|precordial|limb)\s+leads?\b",
                        re.I)
_INTERVALS = ("pr_interval", "qrs_duration", "qt_interval", "qtc_interval", "p_duration",
              "t_duration", "st_duration")
_AMPLITUDES = ("p_amplitude", "qrs_amplitude", "t_amplitude")
_W = r"(?:-|\s)?"  # "T wave", "T-wave", "Twave"
# (feature, pattern of its name); earlier entries win where names overlap ("QTc" before "QT").
_NAMES: tuple[tuple[str, str], ...] = (
    ("st_deviation", r"\bst" + _W + r"(?:segment\s+)?(?P<st>elevation|depression|elevated|"
                     r"depressed)|\b(?P<st2>elevated|depressed)\s+st\b"),
    ("t_inversion", r"\bt" + _W + r"waves?\s+(?:is\s+|are\s+)?invert(?:ed|ion)|\binverted\s+t"
                    + _W + r"waves?|\bt" + _W + r"(?:wave\s+)?inversions?"),
    ("p_amplitude", r"\bp" + _W + r"wave\s+(?:amplitude|height|voltage)|\bp\s+amplitude"),
    ("qrs_amplitude", r"\bqrs(?:\s+complex)?\s+(?:amplitude|voltage)|\bqrs\s+peak-to-peak"),
    ("t_amplitude", r"\bt" + _W + r"wave\s+(?:amplitude|height|voltage)|\bt\s+amplitude"),
    ("p_duration", r"\bp" + _W + r"wave\s+(?:duration|width)|\bp\s+duration"),
    ("t_duration", r"\bt" + _W + r"wave\s+duration|\bt\s+duration"),
    ("st_duration", r"\bst" + _W + r"(?:segment\s+)?duration|\bst\s+segment\s+(?:of|is|lasts)"),
    ("qtc_interval", r"\bqtc\b|\bqt\s*c\b|\bcorrected\s+qt(?:\s+interval)?|\bqt\s+corrected"),
    ("qt_interval", r"\bqt(?:\s+interval)?\b"),
    ("pr_interval", r"\bp[rq](?:\s+interval)?\b"),
    ("qrs_duration", r"\bqrs(?:\s+complex(?:es)?)?(?:\s+(?:duration|width|interval))?\b"),
    ("rr1", r"\brr(?:\s+intervals?)?\b"),
    ("heart_rate", r"\b(?:heart|ventricular|sinus)?\s*(?<!atrial )rate\b|\b(?P<hr>brady|tachy)"
                   r"cardi[ac]\b"),
)
_UNIT = (r"(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>ms\b|msec\b|milliseconds?\b|sec\b|seconds?\b|s\b|"
         r"bpm\b|beats?\s*(?:/|per)\s*min(?:ute)?\b|/\s*min\b|mv\b|mm\b|[uµμ]v\b)")
_BARE_BPM = re.compile(r"(?P<num>\d+(?:\.\d+)?)\s*(?:bpm\b|beats?\s*(?:/|per)\s*min(?:ute)?\b)")
_LEAD = r"(?:avr|avl|avf|v[1-6]|iii|ii|i)"
_LEAD_LIST = re.compile(
    r"\b(?:in|on|at|across)\s+(?:the\s+)?(?:leads?\s+)?(?P<list>" + _LEAD + r"\b(?:\s*(?:-|–|"
    r"to|through|,|and|,\s*and|/)\s*" + _LEAD + r"\b)*)(?:\s+leads?)?|\blead\s+(?P<one>"
    + _LEAD + r")\b", re.I)
_HIGH = re.compile(r"\b(?:prolong\w*|long|lengthen\w*|increased|wide\w*|broad|elevated rate|"
                   r"fast|rapid)\b", re.I)
_LOW = re.compile(r"\b(?:short\w*|narrow|reduced|slow)\b", re.I)
_NORMAL = re.compile(r"\b(?:normal|within normal limits|unremarkable)\b", re.I)
_NEG = re.compile(r"\b(?:no|not|without|absence of|absent|negative for)\b[^.;]{0,25}$", re.I)
_SENTENCE = re.compile(r"(?<=[.;!?])\s+|\n+")


@dataclass(frozen=True)
class Claim:
    """One checkable statement.

    Attributes:
        text: the sentence it came from.
        feature: a grounding feature name, ``st_deviation`` or ``t_inversion``.
        value: claimed number in the feature's unit (ms, bpm, mV), or None.
        qualifier: ``high``/``low``/``normal`` (for ST: ``high`` = elevation, ``low`` =
            depression), or None.
        lead: lead name in :data:`LEADS` spelling, or None (record level or territory).
        negated: "no ST elevation" style claims.
    """

    text: str
    feature: str
    value: Optional[float] = None
    qualifier: Optional[Qualifier] = None
    lead: Optional[str] = None
    negated: bool = False
    territory: Optional[str] = None
    """Lead group named instead of leads ("inferior leads"; see :data:`TERRITORIES`)."""


@dataclass(frozen=True)
class Tolerances:
    """Agreement limits (see module doc): ``interval_ms`` (ms), ``rr_ms`` (ms), ``rate_bpm``
    (bpm), ``amplitude_mv`` (mV), ``st_mv`` (mV, also the ST sign threshold), ``t_mv`` (mV,
    T-inversion sign threshold)."""

    interval_ms: float = 20.0
    rr_ms: float = 50.0
    rate_bpm: float = 10.0
    amplitude_mv: float = 0.1
    st_mv: float = 0.05
    t_mv: float = 0.05

    def for_feature(self, feature: str) -> float:
        """Tolerance of ``feature`` in its unit."""
        if feature == "heart_rate":
            return self.rate_bpm
        if feature == "rr1":
            return self.rr_ms
        if feature in _AMPLITUDES:
            return self.amplitude_mv
        if feature == "st_deviation":
            return self.st_mv
        return self.interval_ms


@dataclass(frozen=True)
class ClaimVerdict:
    """A claim, its verdict, the measurement used (feature unit; None if none) and why."""

    claim: Claim
    verdict: Verdict
    measured: Optional[float]
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        c = self.claim
        return {"text": c.text, "feature": c.feature, "value": c.value,
                "qualifier": c.qualifier, "lead": c.lead, "negated": c.negated,
                "verdict": self.verdict, "measured": self.measured, "reason": self.reason}


@dataclass
class GroundingResult:
    """Per-claim verdicts of one interpretation and their counts."""

    verdicts: list[ClaimVerdict] = field(default_factory=list)

    def count(self, verdict: Verdict) -> int:
        """Number of claims with ``verdict``."""
        return sum(v.verdict == verdict for v in self.verdicts)

    @property
    def score(self) -> Optional[float]:
        """``supported / (supported + contradicted)``; None when no claim was checkable."""
        s, c = self.count("supported"), self.count("contradicted")
        return s / (s + c) if s + c else None


# --------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------

def _to_unit(num: float, unit: str, feature: str) -> Optional[float]:
    """``num unit`` in the feature's unit (ms, bpm, mV); None when the unit does not fit."""
    u = unit.lower().replace(" ", "")
    if feature == "heart_rate":
        return num if ("bpm" in u or "min" in u) else None
    if feature in _AMPLITUDES or feature == "st_deviation":
        return {"mv": num, "mm": num * 0.1}.get(u, num / 1000.0 if u.endswith("v") else None)
    if u.startswith("ms") or u.startswith("milli"):
        return num
    if u in ("s", "sec", "second", "seconds"):
        return num * 1000.0
    return None


def _expand_leads(text: str) -> list[str]:
    """Lead names (LEADS spelling) in a list like ``V1-V3, aVL and I``."""
    canon = {lead.lower(): lead for lead in LEADS}
    toks = re.findall(_LEAD + r"\b|-|–|to|through", text, flags=re.I)
    out: list[str] = []
    k = 0
    while k < len(toks):
        t = toks[k].lower()
        if t in ("-", "–", "to", "through") and out and k + 1 < len(toks):
            a, b = LEADS.index(out[-1]), LEADS.index(canon[toks[k + 1].lower()])
            out.extend(LEADS[i] for i in range(a + 1, b + 1) if LEADS[i] not in out)
            k += 2
            continue
        if t in canon and canon[t] not in out:
            out.append(canon[t])
        k += 1
    return out


def _qualifier(before: str, after: str, feature: str, match: re.Match
               ) -> Optional[Qualifier]:
    """Qualifier of a claim: from the name itself (bradycardia, ST elevation) or the
    qualifier word nearest to the name in ``before`` (text just before it) or ``after``."""
    if feature == "heart_rate" and match.groupdict().get("hr"):
        return "low" if match.group("hr").lower() == "brady" else "high"
    if feature == "st_deviation":
        word = (match.group("st") or match.group("st2") or "").lower()
        return "high" if word.startswith("elevat") else "low"
    if feature == "t_inversion":
        return None
    best: tuple[int, Optional[Qualifier]] = (10 ** 6, None)
    for pat, q in ((_HIGH, "high"), (_LOW, "low"), (_NORMAL, "normal")):
        for m in pat.finditer(before):
            best = min(best, (len(before) - m.end(), q), key=lambda b: b[0])
        for m in pat.finditer(after):
            best = min(best, (m.start(), q), key=lambda b: b[0])
    return best[1]


def parse_claims(text: str) -> list[Claim]:
    """Checkable claims in ``text`` (see module doc), in order of appearance; a claim naming
    several leads becomes one claim per lead."""
    claims: list[Claim] = []
    for sentence in (s.strip() for s in _SENTENCE.split(str(text))):
        if not sentence:
            continue
        low = sentence.lower()
        hits: list[tuple[int, int, str, re.Match]] = []
        taken: list[tuple[int, int]] = []
        for feature, pat in _NAMES:
            for m in re.finditer(pat, low):
                if any(a < m.end() and m.start() < b for a, b in taken):
                    continue
                if feature == "heart_rate" and not m.group(0).strip():
                    continue
                hits.append((m.start(), m.end(), feature, m))
                taken.append((m.start(), m.end()))
        hits.sort(key=lambda h: h[0])
        covered_numbers: set[int] = set()
        for k, (start, end, feature, m) in enumerate(hits):
            stop = hits[k + 1][0] if k + 1 < len(hits) else len(low)
            window = low[end:stop]
            clause_start = hits[k - 1][1] if k else 0
            before = low[clause_start:start]
            value = None
            if feature != "t_inversion":
                for num in re.finditer(_UNIT, window, flags=re.I):
                    v = _to_unit(float(num.group("num")), num.group("unit"), feature)
                    if v is not None:
                        value = -v if (feature == "st_deviation" and
                                       m.groupdict().get("st") in ("depression", "depressed")
                                       or m.groupdict().get("st2") == "depressed") else v
                        covered_numbers.add(end + num.start())
                        break
            qual = _qualifier(before[-30:], window[:40], feature, m)
            if feature not in NORMAL_LIMITS and feature != "st_deviation":
                qual = None
            leads_m = _LEAD_LIST.search(window)
            leads = _expand_leads(leads_m.group("list") or leads_m.group("one")) if leads_m \
                else []
            if not leads:
                pre = _LEAD_LIST.search(re.split(r"[,;:]", before)[-1])
                leads = _expand_leads(pre.group("list") or pre.group("one")) if pre else []
            negated = (feature in ("st_deviation", "t_inversion")
                       and bool(_NEG.search(before)))
            if value is None and qual is None and feature not in ("t_inversion",):
                continue  # nothing checkable ("the QRS complexes")
            if feature == "heart_rate":
                leads = []
            terr = _TERRITORY.search(window) if not leads and feature != "heart_rate" else None
            for lead in leads or [None]:
                claims.append(Claim(sentence, feature, value, qual, lead, negated,
                                    terr.group("terr").lower() if terr else None))
        if "atrial rate" not in low and not any(c.feature == "heart_rate" and
                                                c.text == sentence for c in claims):
            for num in _BARE_BPM.finditer(low):  # "sinus rhythm at 72 bpm"
                if num.start() not in covered_numbers:
                    claims.append(Claim(sentence, "heart_rate", float(num.group("num"))))
                    break
    return claims


# --------------------------------------------------------------------------------------------
# checking
# --------------------------------------------------------------------------------------------

def _median(x: np.ndarray) -> Optional[float]:
    v = np.asarray(x, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else None


def measured_value(features: GroundingFeatures, feature: str,
                   lead: Optional[str]) -> Optional[float]:
    """Median of ``feature`` over beats of ``lead`` (over beats and leads when None; lead II
    for amplitudes); ``t_inversion`` reads ``t_amplitude``. None when not measurable."""
    name = "t_amplitude" if feature == "t_inversion" else feature
    arr = getattr(features, name)
    if lead is None and name in _AMPLITUDES:
        lead = "II"
    return _median(arr if lead is None else arr[:, LEADS.index(lead)])


def _check_number(claimed: float, measured: float, tol: float) -> Verdict:
    return "supported" if abs(claimed - measured) <= tol else "contradicted"


def _check_qualifier(q: Qualifier, feature: str, measured: float, tol: float) -> Verdict:
    lo, hi = NORMAL_LIMITS[feature]
    if q == "high":
        beyond = measured >= hi if feature == "qrs_duration" else measured > hi
        return "supported" if beyond else ("contradicted" if measured <= hi - tol
                                           else "unverifiable")
    if q == "low":
        return "supported" if measured < lo else ("contradicted" if measured >= lo + tol
                                                  else "unverifiable")
    if lo <= measured <= hi:
        return "supported"
    return "contradicted" if (measured < lo - tol or measured > hi + tol) else "unverifiable"


def _combine(verdicts: Sequence[Verdict]) -> Verdict:
    if "contradicted" in verdicts:
        return "contradicted"
    return "supported" if "supported" in verdicts else "unverifiable"


def _st_verdict(c: Claim, dev: float, lead: int, tol: Tolerances) -> Verdict:
    """ST claim in one lead (deviation ``dev`` mV)."""
    if c.negated:
        if c.qualifier == "high":
            limit = ST_ELEVATION_V2_V3_MV if LEADS[lead] in ("V2", "V3") else ST_ELEVATION_MV
            return "contradicted" if dev >= limit else "supported"
        return "contradicted" if dev <= -ST_DEPRESSION_MV else "supported"
    sign_ok = dev >= tol.st_mv if c.qualifier == "high" else dev <= -tol.st_mv
    checks: list[Verdict] = ["supported" if sign_ok else "contradicted"]
    if c.value is not None:
        checks.append(_check_number(c.value, dev, tol.st_mv))
    return _combine(checks)


def _t_verdict(c: Claim, t: float, tol: Tolerances) -> Verdict:
    if t <= -tol.t_mv:
        v: Verdict = "supported"
    elif t >= tol.t_mv:
        v = "contradicted"
    else:
        v = "unverifiable"
    if c.negated and v != "unverifiable":
        v = "contradicted" if v == "supported" else "supported"
    return v


def _any_lead(c: Claim, features: GroundingFeatures, tol: Tolerances
              ) -> tuple[Verdict, Optional[float], str]:
    """ST / T-inversion claim without a lead: checked in every lead (of its territory)."""
    skip_avr = c.feature == "t_inversion" or c.qualifier == "low"
    group = TERRITORIES[c.territory] if c.territory else LEADS
    found: list[tuple[Verdict, float, str]] = []
    for k, name in enumerate(LEADS):
        if name not in group or (skip_avr and name == "aVR"):
            continue
        m = measured_value(features, c.feature, name)
        if m is None:
            continue
        v = _st_verdict(c, m, k, tol) if c.feature == "st_deviation" else _t_verdict(c, m, tol)
        found.append((v, m, name))
    if not found:
        return "unverifiable", None, "not measurable in any lead"
    if c.negated:
        bad = [f for f in found if f[0] == "contradicted"]
        if bad:
            return "contradicted", bad[0][1], f"present in {bad[0][2]}"
        return "supported", None, "absent in every measurable lead"
    good = [f for f in found if f[0] == "supported"]
    if good:
        return "supported", good[0][1], f"seen in {good[0][2]}"
    if all(f[0] == "contradicted" for f in found):
        return "contradicted", None, "not seen in any lead"
    return "unverifiable", None, "borderline in every lead"


def check_claim(claim: Claim, features: GroundingFeatures,
                tol: Tolerances = Tolerances()) -> ClaimVerdict:
    """Verdict of one claim against the features of its ECG (see module doc)."""
    c = claim
    if c.feature in ("st_deviation", "t_inversion") and c.lead is None:
        v, m, why = _any_lead(c, features, tol)
        return ClaimVerdict(c, v, m, why)
    if c.territory and c.lead is None:
        name = c.feature
        cols = [LEADS.index(x) for x in TERRITORIES[c.territory]]
        measured = _median(getattr(features, name)[:, cols])
        where = f" in the {c.territory} leads"
    else:
        measured = measured_value(features, c.feature, c.lead)
        where = f" in {c.lead}" if c.lead else ""
    if measured is None:
        return ClaimVerdict(c, "unverifiable", None, f"{c.feature} not measurable{where}")
    if c.feature == "st_deviation":
        v = _st_verdict(c, measured, LEADS.index(c.lead or "II"), tol)
        return ClaimVerdict(c, v, measured, f"ST deviation {measured:+.3f} mV{where}")
    if c.feature == "t_inversion":
        v = _t_verdict(c, measured, tol)
        return ClaimVerdict(c, v, measured, f"T amplitude {measured:+.3f} mV{where}")
    t = tol.for_feature(c.feature)
    checks: list[Verdict] = []
    if c.value is not None:
        checks.append(_check_number(c.value, measured, t))
    if c.qualifier is not None and c.feature in NORMAL_LIMITS:
        checks.append(_check_qualifier(c.qualifier, c.feature, measured, t))
    return ClaimVerdict(c, _combine(checks), measured,
                        f"measured {measured:.3g}{where} (tolerance {t:g})")


def check_claims(claims: Sequence[Claim], features: GroundingFeatures,
                 tol: Tolerances = Tolerances()) -> GroundingResult:
    """Verdicts of ``claims`` against one ECG's features."""
    return GroundingResult([check_claim(c, features, tol) for c in claims])


def ground_text(text: str, features: GroundingFeatures,
                tol: Tolerances = Tolerances()) -> GroundingResult:
    """:func:`parse_claims` then :func:`check_claims`."""
    return check_claims(parse_claims(text), features, tol)


def grounding_metrics(results: Sequence[GroundingResult]) -> dict[str, float]:
    """Corpus metrics over interpretations: ``score`` (pooled supported / checkable claims),
    ``macro_score`` (mean per-text score over texts with a checkable claim), counts
    ``supported``/``contradicted``/``unverifiable``/``n_claims`` and ``claims_per_text``."""
    s = sum(r.count("supported") for r in results)
    c = sum(r.count("contradicted") for r in results)
    u = sum(r.count("unverifiable") for r in results)
    per = [r.score for r in results if r.score is not None]
    out = {"supported": float(s), "contradicted": float(c), "unverifiable": float(u),
           "n_claims": float(s + c + u),
           "claims_per_text": (s + c + u) / len(results) if results else 0.0}
    if s + c:
        out["score"] = s / (s + c)
    if per:
        out["macro_score"] = float(np.mean(per))
    return out
