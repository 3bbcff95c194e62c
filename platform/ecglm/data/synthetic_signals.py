"""Simulated 12-lead ECGs with known labels for the synthetic fallback dataset
(:mod:`ecglm.data.synthetic`): rhythm, heart rate, interval features (ms) and noise.
Signals are ``(12, n_samples)`` mV in :data:`~ecglm.data.canonical.LEADS` order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RHYTHMS: dict[str, tuple[str, int, int]] = {
    "sinus rhythm": ("SR", 60, 99),
    "sinus bradycardia": ("SBRAD", 45, 59),
    "sinus tachycardia": ("STACH", 101, 130),
    "atrial fibrillation": ("AFIB", 70, 130),
}
"""rhythm -> (SCP code, min bpm, max bpm)."""
NOISES: tuple[str, ...] = ("baseline drift", "static noise", "burst noise")
NORMAL_RANGES_MS: dict[str, tuple[int, int]] = {
    "rr interval": (600, 1000),
    "p duration": (60, 120),
    "pr interval": (120, 200),
    "qrs duration": (60, 110),
    "qt interval": (320, 440),
    "qt corrected": (350, 450),
}
"""Inclusive normal range (ms) of each numeric feature; outside is abnormal."""

# Amplitudes (mV) of the P, Q, R, S, T waves in the independent leads I, II, V1..V6.
_BASE_AMPS = np.array([
    [0.10, -0.05, 0.80, -0.10, 0.25],  # I
    [0.15, -0.05, 1.20, -0.20, 0.35],  # II
    [0.08, 0.00, 0.30, -1.00, -0.10],  # V1
    [0.10, 0.00, 0.60, -1.30, 0.40],   # V2
    [0.10, -0.02, 0.90, -0.90, 0.45],  # V3
    [0.10, -0.05, 1.40, -0.50, 0.40],  # V4
    [0.10, -0.06, 1.30, -0.25, 0.35],  # V5
    [0.10, -0.06, 1.00, -0.15, 0.28],  # V6
])
_FWAVE_AMPS = np.array([0.3, 0.6, 1.0, 0.6, 0.4, 0.3, 0.3, 0.3])  # relative, AF f-waves


@dataclass
class SyntheticRecord:
    """Known labels of one simulated ECG; features in ms (``None``: not measurable)."""

    ecg_id: int
    patient_id: int
    strat_fold: int
    rhythm: str
    heart_rate: int
    features: dict[str, int | None]
    noises: list[str] = field(default_factory=list)

    def abnormal(self, feature: str) -> bool | None:
        """Whether ``feature`` is outside its normal range (``None`` if not measurable)."""
        value = self.features[feature]
        if value is None:
            return None
        lo, hi = NORMAL_RANGES_MS[feature]
        return not lo <= value <= hi

    @property
    def scp_codes(self) -> dict[str, float]:
        codes = {RHYTHMS[self.rhythm][0]: 100.0}
        pr, qrs = self.features["pr interval"], self.features["qrs duration"]
        if pr is not None and pr > NORMAL_RANGES_MS["pr interval"][1]:
            codes["1AVB"] = 100.0
        if qrs is not None and qrs > NORMAL_RANGES_MS["qrs duration"][1]:
            codes["IVCD"] = 100.0
        if self.rhythm == "sinus rhythm" and not any(
                self.abnormal(f) for f in NORMAL_RANGES_MS):
            codes["NORM"] = 100.0
        return codes

    @property
    def report(self) -> str:
        parts = [f"{self.rhythm}, rate {self.heart_rate} bpm."]
        f = self.features
        if self.rhythm == "atrial fibrillation":
            parts.append(f"no p waves, irregular rr intervals, qrs {f['qrs duration']} ms, "
                         f"qt/qtc {f['qt interval']}/{f['qt corrected']} ms.")
        else:
            parts.append(f"pr {f['pr interval']} ms, qrs {f['qrs duration']} ms, "
                         f"qt/qtc {f['qt interval']}/{f['qt corrected']} ms.")
        abnormal = [name for name in NORMAL_RANGES_MS
                    if name != "rr interval" and self.abnormal(name)]
        if abnormal:
            parts.append("abnormal " + ", ".join(abnormal) + ".")
        elif "NORM" in self.scp_codes:
            parts.append("otherwise normal ecg.")
        parts.extend(f"{noise} present." for noise in self.noises)
        return " ".join(parts)


def _uniform_int(rng: np.random.Generator, lo: float, hi: float) -> int:
    return int(round(rng.uniform(lo, hi)))


def simulate_labels(n_records: int, seed: int) -> list[SyntheticRecord]:
    """Draw the labels of ``n_records`` ECGs (ecg_id 1..n); ~15% of patients have 2 records."""
    rng = np.random.default_rng([seed, 0])
    rhythm_names = list(RHYTHMS)
    patients: list[int] = []
    for i in range(n_records):
        reuse = i > 0 and rng.random() < 0.15 and patients.count(patients[-1]) == 1
        patients.append(patients[-1] if reuse else 20001 + len(set(patients)))
    unique = sorted(set(patients))
    folds = {p: int(k % 10) + 1 for k, p in zip(rng.permutation(len(unique)), unique)}
    out = []
    for i, pid in enumerate(patients):
        rhythm = rhythm_names[int(rng.choice(len(rhythm_names), p=[0.4, 0.2, 0.2, 0.2]))]
        _, lo, hi = RHYTHMS[rhythm]
        hr = _uniform_int(rng, lo, hi)
        rr = int(round(60000 / hr))
        af = rhythm == "atrial fibrillation"
        pdur = _uniform_int(rng, 80, 110) if rng.random() < 0.9 else _uniform_int(rng, 125, 145)
        pr = _uniform_int(rng, 130, 190) if rng.random() < 0.85 else _uniform_int(rng, 210, 260)
        qrs = _uniform_int(rng, 80, 104) if rng.random() < 0.88 else _uniform_int(rng, 120, 150)
        qtc0 = rng.uniform(380, 440) if rng.random() < 0.85 else rng.uniform(460, 500)
        qt = int(round(qtc0 * np.sqrt(rr / 1000)))
        qtc = int(round(qt / np.sqrt(rr / 1000)))
        noises = [n for n, p in zip(NOISES, (0.3, 0.25, 0.2)) if rng.random() < p]
        out.append(SyntheticRecord(
            ecg_id=i + 1, patient_id=pid, strat_fold=folds[pid], rhythm=rhythm, heart_rate=hr,
            features={"rr interval": rr, "p duration": None if af else pdur,
                      "pr interval": None if af else max(pr, pdur + 30),
                      "qrs duration": qrs, "qt interval": qt, "qt corrected": qtc},
            noises=noises))
    return out


def _gauss_train(t: np.ndarray, centers: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((t[None, :] - centers[:, None]) / sigma) ** 2).sum(axis=0)


def simulate_signal(rec: SyntheticRecord, seed: int, fs: int, n_samples: int) -> np.ndarray:
    """ECG of ``rec``: float64 ``(12, n_samples)`` in mV, canonical lead order.

    Gaussian P/Q/R/S/T waves per beat in leads I, II, V1-V6 (per-record amplitude jitter);
    III, aVR, aVL, aVF follow Einthoven/Goldberger; then the labelled noises.
    """
    rng = np.random.default_rng([seed, rec.ecg_id])
    t = np.arange(n_samples) / fs
    duration = n_samples / fs
    rr_mean = 60.0 / rec.heart_rate
    af = rec.rhythm == "atrial fibrillation"
    peaks = [rng.uniform(-rr_mean, 0.0)]
    while peaks[-1] < duration + rr_mean:
        jitter = rng.uniform(0.6, 1.4) if af else 1.0 + 0.02 * rng.standard_normal()
        peaks.append(peaks[-1] + rr_mean * jitter)
    r = np.array(peaks)
    f = rec.features
    qrs = f["qrs duration"] / 1000
    onset = r - qrs / 2
    sig_t = 0.045
    basis = np.stack([
        np.zeros_like(t) if af else _gauss_train(
            t, onset - f["pr interval"] / 1000 + f["p duration"] / 2000, f["p duration"] / 6000),
        _gauss_train(t, r - 0.35 * qrs, qrs / 12),
        _gauss_train(t, r, qrs / 10),
        _gauss_train(t, r + 0.35 * qrs, qrs / 12),
        _gauss_train(t, onset + f["qt interval"] / 1000 - 2.5 * sig_t, sig_t),
    ])
    amps = _BASE_AMPS * np.clip(1 + 0.15 * rng.standard_normal(_BASE_AMPS.shape), 0.5, 1.5)
    ind = amps @ basis  # (8, T): I, II, V1..V6
    if af:
        freq = rng.uniform(4.0, 7.0)
        fwave = 0.06 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
        ind += _FWAVE_AMPS[:, None] * fwave[None, :] * (1 + 0.3 * np.sin(0.7 * t))[None, :]
    lead_i, lead_ii = ind[0], ind[1]
    x = np.stack([lead_i, lead_ii, lead_ii - lead_i, -(lead_i + lead_ii) / 2,
                  lead_i - lead_ii / 2, lead_ii - lead_i / 2, *ind[2:]])
    x += 0.004 * rng.standard_normal(x.shape)
    if "baseline drift" in rec.noises:
        f0 = rng.uniform(0.1, 0.5, size=(12, 1))
        phase = rng.uniform(0, 2 * np.pi, (12, 1))
        x += rng.uniform(0.2, 0.5, (12, 1)) * np.sin(2 * np.pi * f0 * t + phase)
    if "static noise" in rec.noises:
        x += rng.uniform(0.04, 0.08) * rng.standard_normal(x.shape)
        x += 0.03 * np.sin(2 * np.pi * 50.0 * t)[None, :]
    if "burst noise" in rec.noises:
        for _ in range(int(rng.integers(1, 4))):
            start = int(rng.integers(0, max(1, n_samples - fs // 2)))
            stop = min(n_samples, start + int(rng.uniform(0.2, 0.5) * fs))
            x[:, start:stop] += 0.4 * rng.standard_normal((12, stop - start))
    return x
