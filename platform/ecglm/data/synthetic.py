"""Synthetic fallback dataset in the PTB-XL + ECG-QA layout.

Simulated 12-lead ECGs with known labels: rhythm (sinus rhythm / bradycardia / tachycardia,
atrial fibrillation with irregular RR and no P waves), heart rate, interval features (ms) and
noise (baseline drift, static noise, burst noise). Reports, SCP codes and ECG-QA-style
questions are derived from those labels, so every answer is computable. Output is
byte-identical for the same arguments.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


GENERATOR_VERSION = 1
MARKER_FILE = "synthetic_manifest.json"
"""Written last into the dataset root: ``{"n_records", "seed", "fs", "seconds", "version"}``."""

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

# Header lead names as PTB-XL writes them (upper-case augmented leads).
_HEADER_LEADS = ("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")
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


# --- ECG-QA-style questions -------------------------------------------------------------------

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


def record_relpath(ecg_id: int, fs: int) -> str:
    """``records500/00000/00001_hr`` style path relative to ``ptbxl/``."""
    return f"records{fs}/{(ecg_id // 1000) * 1000:05d}/{ecg_id:05d}_hr"


def write_wfdb_fmt16(base: Path, x_mv: np.ndarray, fs: int) -> None:
    """Write ``x_mv`` ``(12, T)`` mV as WFDB format 16, gain 1000/mV (``base``.hea/.dat)."""
    d = np.clip(np.rint(x_mv * 1000.0), -32767, 32767).astype("<i2")  # -32768 = NaN in WFDB
    base.parent.mkdir(parents=True, exist_ok=True)
    base.with_suffix(".dat").write_bytes(np.ascontiguousarray(d.T).tobytes())
    name = base.name
    lines = [f"{name} {d.shape[0]} {fs} {d.shape[1]}"]
    for lead, row in zip(_HEADER_LEADS, d):
        checksum = int(row.astype(np.int64).sum()) % 65536
        lines.append(f"{name}.dat 16 1000.0(0)/mV 16 0 {int(row[0])} {checksum} 0 {lead}")
    base.with_suffix(".hea").write_text("\n".join(lines) + "\n")


def _database_csv(records: list[SyntheticRecord], fs: int) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = ["ecg_id", "patient_id", "report", "scp_codes", "strat_fold", "filename_hr",
            "rhythm", "heart_rate", *[n.replace(" ", "_") for n in NORMAL_RANGES_MS],
            "baseline_drift", "static_noise", "burst_noise"]
    w.writerow(cols)
    for rec in records:
        feats = ["" if rec.features[n] is None else rec.features[n] for n in NORMAL_RANGES_MS]
        w.writerow([rec.ecg_id, f"{rec.patient_id:.1f}", rec.report, repr(rec.scp_codes),
                    rec.strat_fold, record_relpath(rec.ecg_id, fs), rec.rhythm, rec.heart_rate,
                    *feats, *["I-V6" if n in rec.noises else "" for n in NOISES]])
    return buf.getvalue()


def read_marker(root: Path) -> dict | None:
    """The marker of a complete synthetic dataset at ``root``, or ``None``."""
    path = Path(root) / MARKER_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def marker_for(n_records: int, seed: int, fs: int, seconds: float) -> dict:
    """Marker content identifying a synthetic dataset."""
    return {"n_records": n_records, "seed": seed, "fs": fs, "seconds": seconds,
            "version": GENERATOR_VERSION}


def write_synthetic_dataset(root: Path, n_records: int, seed: int, fs: int = 500,
                            seconds: float = 10.0) -> Path:
    """Write a simulated PTB-XL + ECG-QA dataset under ``root`` and return ``root``.

    Layout: ``ptbxl/records{fs}/00000/NNNNN_hr.{hea,dat}`` (WFDB fmt 16, gain 1000/mV),
    ``ptbxl/ptbxl_database.csv`` (catalog columns plus the labels), ``ecgqa/ptbxl/``
    ``{template,paraphrased}_ecgid_le300.json``, ``answers_for_each_template.csv``,
    ``answers.csv``, ``{train,valid,test}_ecgs.tsv`` (strat_fold 1-8/9/10) and the marker
    :data:`MARKER_FILE` (written last). Same arguments -> identical bytes.
    """
    if n_records < 2:
        raise ValueError(f"n_records: expected >= 2, got {n_records}")
    root = Path(root)
    (root / MARKER_FILE).unlink(missing_ok=True)
    n_samples = int(round(fs * seconds))
    records = simulate_labels(n_records, seed)
    ptb = root / "ptbxl"
    for rec in records:
        x = simulate_signal(rec, seed, fs, n_samples)
        write_wfdb_fmt16(ptb / record_relpath(rec.ecg_id, fs), x, fs)
    (ptb / "ptbxl_database.csv").write_text(_database_csv(records, fs))
    write_ecgqa_files(root / "ecgqa" / "ptbxl", records, seed)
    marker = marker_for(n_records, seed, fs, seconds)
    (root / MARKER_FILE).write_text(json.dumps(marker, sort_keys=True) + "\n")
    return root
