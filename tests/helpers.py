"""Helpers shared by the test packages (fixtures stay in the ``conftest.py`` files).

Sections: repository paths; tiny experiment configs; serving (free port, checkpoint writer,
the ``Served`` record); real-record paths and writers of corrupted WFDB copies; synthetic 12-lead
ECGs with known fiducial points; LUDB expert beats; report-like text pairs; a fake
OpenAI-compatible chat server.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import random
import shutil
import socket
import sys
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import wfdb

from ecglm import checkpoint
from ecglm.config import ExperimentConfig, load_config

if TYPE_CHECKING:  # annotations only: importing train/ here would load Ray for every test
    from ecglm.train.run import Prepared

REPO = Path(__file__).resolve().parents[1]
"""The repository root."""
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()
"""``../shared/data`` (real datasets; tests that need them skip when absent)."""


# --------------------------------------------------------------------------------------------
# tiny experiment configs
# --------------------------------------------------------------------------------------------

def tiny_config(root: Path, *overrides: str) -> ExperimentConfig:
    """``jobs/configs/tiny.yaml`` with every output (data, models, MLflow, runs, Ray storage)
    under ``root``; ``overrides`` are dotted ``key=value`` strings applied after."""
    return load_config(
        REPO / "jobs/configs/tiny.yaml",
        [f"data.synthetic_root={root}/synthetic", f"data.shard_dir={root}/shards",
         f"llm.cache_dir={root}/models", f"tracking.tracking_uri=sqlite:///{root}/mlflow.db",
         f"tracking.artifact_root={root}/artifacts", f"output_dir={root}/runs",
         f"train.storage_path={root}/ray", *overrides],
    )


# --------------------------------------------------------------------------------------------
# serving
# --------------------------------------------------------------------------------------------

MAX_BODY_BYTES = 2_000_000
"""``serve.max_body_bytes`` of the served test apps (a 500 Hz x 10 s ECG as JSON is ~1.2 MB)."""


@dataclass
class Served:
    """A running test application."""

    url: str
    cfg: ExperimentConfig
    prep: Prepared
    checkpoint: Path
    ready_s: float
    headers: dict[str, str] = field(default_factory=dict)
    """Headers every request needs (the bearer token when the app has one)."""
    adapters: dict[str, "Served"] = field(default_factory=dict)
    """Adapters served next to the main model (``url`` is the main app's)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_checkpoint(cfg: ExperimentConfig, folder: Path, perturb_seed: int = 1234) -> Path:
    """``build_ecg_lm(cfg)`` (seeded) with every trainable tensor perturbed deterministically, as
    after training, saved as ``trainable.safetensors`` + ``config.yaml`` in ``folder``.

    The perturbation makes a served answer depend on the checkpoint actually being loaded
    (a seeded rebuild alone would not match); another ``perturb_seed`` gives another
    "trained" model of the same base (an adapter).
    """
    # deferred on purpose: the model stack (transformers, peft) is heavy and most tests that
    # import this module never build a model
    from ecglm.models.ecg_lm import build_ecg_lm

    torch.manual_seed(cfg.seed)
    model = build_ecg_lm(cfg)
    gen = torch.Generator().manual_seed(perturb_seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                scale = 0.05 if "lora_B" in name else 0.02
                param.add_(scale * torch.randn(param.shape, generator=gen))
    checkpoint.write_checkpoint(folder, model.trainable_state_dict(), cfg, 0, {})
    return folder


def save_checkpoint(model: Any, folder: Path) -> Path:
    """``model``'s trainable tensors (and its config) written by the one checkpoint writer into
    ``folder``; returns the trainable-tensor file."""
    checkpoint.write_checkpoint(folder, model.trainable_state_dict(), model.cfg, 0, {})
    return folder / checkpoint.TRAINABLE_FILE


def load_checkpoint(model: Any, file: Path) -> None:
    """Load the trainable tensors of the checkpoint that holds ``file`` into ``model``."""
    model.load_trainable_state_dict(checkpoint.read_trainable(Path(file).parent))


# --------------------------------------------------------------------------------------------
# real records and corrupted WFDB copies
# --------------------------------------------------------------------------------------------

RECORDS500 = SHARED_DATA / "ptbxl" / "records500" / "00000"
RECORDS100 = SHARED_DATA / "ptbxl" / "records100" / "00000"


def copy_record(src: Path, dst_dir: Path, name: str) -> Path:
    """Copy WFDB record ``src`` (no extension) to ``dst_dir/name`` with its header renamed."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src.with_suffix(".dat"), dst_dir / f"{name}.dat")
    header = src.with_suffix(".hea").read_text().replace(f"{src.name}.dat", f"{name}.dat")
    lines = header.splitlines()
    lines[0] = " ".join([name, *lines[0].split()[1:]])
    (dst_dir / f"{name}.hea").write_text("\n".join(lines) + "\n")
    return dst_dir / name


def truncate_dat(record: Path, n_bytes: int) -> None:
    """Keep only the first ``n_bytes`` of ``record``.dat."""
    dat = record.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:n_bytes])


def put_nan(record: Path, lead_index: int, n_leads: int = 12) -> None:
    """Overwrite samples 100..199 of channel ``lead_index`` with WFDB's NaN sentinel (-32768)."""
    dat = record.with_suffix(".dat")
    d = np.frombuffer(dat.read_bytes(), dtype="<i2").reshape(-1, n_leads).copy()
    d[100:200, lead_index] = -32768
    dat.write_bytes(d.tobytes())


def rename_lead(record: Path, old: str, new: str) -> None:
    """Rename channel ``old`` to ``new`` in ``record``.hea."""
    hea = record.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    out = [lines[0]] + [" ".join([*ln.split()[:-1], new]) if ln.split()[-1] == old else ln
                        for ln in lines[1:]]
    hea.write_text("\n".join(out) + "\n")


CINC = SHARED_DATA / "cinc2021"
ODD = SHARED_DATA / "odd"
LUDB = SHARED_DATA / "ludb"
MIMIC_LEADS = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
"""MIMIC-IV-ECG's channel order (aVF before aVL)."""


def write_mimic_fixture(root: Path, sources: list[Path]) -> list[dict]:
    """A tiny MIMIC-IV-ECG in its documented layout from real PTB-XL signals.

    Writes ``files/pNNNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN.{hea,dat}`` (wfdb.wrsamp, fmt 16, 200
    adu/mV, 500 Hz, MIMIC lead order), ``record_list.csv`` and ``machine_measurements.csv``
    (report_0..report_17 with 'nan', number-only and short reports). Returns one dict per record:
    subject_id, study_id, path, report (the expected cleaned report, "" when dropped).
    """
    reports = [
        ["Sinus rhythm", "Possible left atrial abnormality", "nan", "---", "Borderline ECG"],
        ["Sinus tachycardia", "120", "Left axis deviation", "Abnormal ECG"],
        ["Normal ECG"],  # 2 tokens: dropped by the cleaning
    ]
    expected = ["Sinus rhythm. Possible left atrial abnormality. Borderline ECG.",
                "Sinus tachycardia. Left axis deviation. Abnormal ECG.", ""]
    out = []
    for k, src in enumerate(sources):
        subject, study = 10000032 + 7 * k, 40689238 + 11 * k
        rel = Path("files") / f"p{str(subject)[:4]}" / f"p{subject}" / f"s{study}"
        (root / rel).mkdir(parents=True, exist_ok=True)
        x, fields = wfdb.rdsamp(str(src))
        names = [n.lower() for n in fields["sig_name"]]
        sig = np.stack([x[:, names.index(n.lower())] for n in MIMIC_LEADS], axis=1)
        wfdb.wrsamp(str(study), fs=500, units=["mV"] * 12, sig_name=MIMIC_LEADS, p_signal=sig,
                    fmt=["16"] * 12, adc_gain=[200.0] * 12, baseline=[0] * 12,
                    write_dir=str(root / rel))
        out.append({"subject_id": subject, "study_id": study, "path": str(rel / str(study)),
                    "report": expected[k % 3], "parts": reports[k % 3]})
    with (root / "record_list.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["subject_id", "study_id", "file_name", "ecg_time", "path"])
        for r in out:
            w.writerow([r["subject_id"], r["study_id"], r["study_id"], "2180-07-23 08:44:00",
                        r["path"]])
    cols = ["subject_id", "study_id", "cart_id", "ecg_time",
            *[f"report_{i}" for i in range(18)], "bandwidth", "filtering", "rr_interval",
            "p_onset", "p_end", "qrs_onset", "qrs_end", "t_end", "p_axis", "qrs_axis", "t_axis"]
    with (root / "machine_measurements.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in out:
            parts = r["parts"] + [""] * (18 - len(r["parts"]))
            w.writerow([r["subject_id"], r["study_id"], 6848296, "2180-07-23 08:44:00", *parts,
                        "0.005-150 Hz", "60 Hz notch Baseline filter", 659, 40, 128, 170, 258,
                        518, 81, 77, 79])
    return out


def set_signal_count(record: Path, n_sig: int) -> None:
    """Rewrite the record line of ``record``.hea to declare ``n_sig`` signals."""
    hea = record.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    parts = lines[0].split()
    parts[1] = str(n_sig)
    hea.write_text("\n".join([" ".join(parts), *lines[1:]]) + "\n")

# --------------------------------------------------------------------------------------------
# synthetic 12-lead ECGs with known fiducial points (overlapping Hann-window waves)
#
# A wave is ``A * 0.5 * (1 - cos(2 pi (t - onset) / D))`` on ``[onset, onset + D]``, 0
# elsewhere, so its onset and offset are exact. Per beat, with ``q`` the global QRS onset:
# P: 100 ms, ends 60 ms before ``q`` (global PR 160 ms); QRS in lead ``l`` (shifted by
# ``QRS_SHIFT_MS[l]`` in 0..6 ms, as real leads differ a little): Q [0, 30] ms, R [10, 70] ms,
# S [55, 100] ms with per-lead weights, so the global QRS runs from ``q`` to ``q + 106`` ms;
# T: 200 ms, starting 100 ms after the latest QRS end (global QT 406 ms). Leads differ in
# morphology (weights) so that, as in real ECGs, no instant inside the QRS is flat in all 12
# leads at once.
# --------------------------------------------------------------------------------------------

FS = 500
P_MS, PR_MS = 100.0, 160.0
QRS_SHIFT_MS = np.array([0.0, 2.0, 4.0, 1.0, 3.0, 5.0, 6.0, 4.0, 2.0, 0.0, 1.0, 3.0])
QRS_MS = 100.0 + QRS_SHIFT_MS.max()
ST_MS, T_MS = 100.0, 200.0
QT_MS = QRS_MS + ST_MS + T_MS
# per-lead amplitudes (mV) of P, Q, R, S, T in LEADS order (I II III aVR aVL aVF V1..V6)
P_MV = np.array([0.10, 0.15, 0.06, -0.12, 0.05, 0.10, 0.08, 0.10, 0.10, 0.10, 0.10, 0.10])
Q_MV = np.array([-0.10, -0.05, -0.02, 0.0, -0.10, -0.03, 0.0, 0.0, 0.0, -0.05, -0.10, -0.10])
R_MV = np.array([0.9, 1.2, 0.4, 0.2, 0.5, 0.8, 0.3, 0.6, 0.9, 1.3, 1.4, 1.1])
S_MV = np.array([-0.2, -0.2, -0.3, -0.9, -0.1, -0.2, -1.0, -1.4, -0.8, -0.4, -0.2, -0.1])
T_MV = np.array([0.25, 0.30, 0.10, -0.25, 0.10, 0.20, 0.10, 0.40, 0.45, 0.40, 0.35, 0.25])


def _hann(t: np.ndarray, onset: float, dur: float, amp: float) -> np.ndarray:
    u = (t - onset) / dur
    return np.where((u >= 0) & (u <= 1), amp * 0.5 * (1 - np.cos(2 * np.pi * u)), 0.0)


def lead_beat(t_ms: np.ndarray, lead: int, q: float, st_shift_mv: float = 0.0) -> np.ndarray:
    """One beat of ``lead`` (mV) at times ``t_ms`` with global QRS onset ``q`` (ms)."""
    d = q + QRS_SHIFT_MS[lead]
    y = _hann(t_ms, q - PR_MS, P_MS, P_MV[lead])
    y += _hann(t_ms, d, 30.0, Q_MV[lead]) + _hann(t_ms, d + 10.0, 60.0, R_MV[lead])
    y += _hann(t_ms, d + 55.0, 45.0, S_MV[lead])
    j = q + QRS_MS
    y += _hann(t_ms, j + ST_MS, T_MS, T_MV[lead])
    if st_shift_mv:
        end = j + ST_MS + T_MS
        y += st_shift_mv * np.clip((t_ms - j) / 10.0, 0, 1) * np.clip((end - t_ms) / 10.0, 0, 1)
    return y


def synthetic_ecg(seconds: float = 10.0, rr_ms: float | list[float] = 800.0,
                  first_qrs_ms: float = 400.0,
                  noise_mv: float = 0.005, seed: int = 0, st_shift_mv: np.ndarray | None = None
                  ) -> tuple[np.ndarray, int, np.ndarray]:
    """``(signal (12, T) float32 mV, fs Hz, global QRS onsets in ms)``.

    ``rr_ms``: one RR interval (regular rhythm) or a list cycled beat after beat.

    ``st_shift_mv`` ``(12,)`` raises (or lowers) the ST segment of each lead by a constant
    from J to the end of T, with 10 ms ramps.
    """
    t = np.arange(int(round(seconds * FS))) * 1000.0 / FS
    cycle = np.atleast_1d(np.asarray(rr_ms, dtype=float))
    steps = np.resize(cycle, int(seconds * 1000.0 / cycle.min()) + 1)
    onsets = first_qrs_ms + np.concatenate(([0.0], np.cumsum(steps)))
    onsets = onsets[onsets < seconds * 1000.0 - QT_MS]
    shifts = np.zeros(12) if st_shift_mv is None else np.asarray(st_shift_mv, dtype=float)
    x = np.zeros((12, t.size))
    for lead in range(12):
        for q in onsets:
            x[lead] += lead_beat(t, lead, q, float(shifts[lead]))
    x += np.random.default_rng(seed).normal(0.0, noise_mv, x.shape)
    return x.astype(np.float32), FS, onsets

# --------------------------------------------------------------------------------------------
# LUDB expert annotations
# --------------------------------------------------------------------------------------------

def expert_beats(record: Path, ext: str) -> tuple[list[dict[str, float]], tuple[int, int]]:
    """Beats as dicts of samples (``r``, ``qrs_on``, ``qrs_off``, ``p_on``, ``t_off``; NaN
    where not annotated) and the annotated span ``(first, last)`` sample."""
    ann = wfdb.rdann(str(record), ext)
    s, sym = np.asarray(ann.sample), list(ann.symbol)
    waves = []
    for k, c in enumerate(sym):
        if c in ("p", "N", "t"):
            on = float(s[k - 1]) if k > 0 and sym[k - 1] == "(" else np.nan
            off = float(s[k + 1]) if k + 1 < len(sym) and sym[k + 1] == ")" else np.nan
            waves.append((c, on, float(s[k]), off))
    beats = []
    for j, (c, on, peak, off) in enumerate(waves):
        if c != "N":
            continue
        p_on = waves[j - 1][1] if j > 0 and waves[j - 1][0] == "p" else np.nan
        t_off = waves[j + 1][3] if j + 1 < len(waves) and waves[j + 1][0] == "t" else np.nan
        beats.append({"r": peak, "qrs_on": on, "qrs_off": off, "p_on": p_on, "t_off": t_off})
    return beats, (int(s.min()), int(s.max()))

# --------------------------------------------------------------------------------------------
# deterministic ECG-report-like hypothesis/reference pairs for metric comparisons
# --------------------------------------------------------------------------------------------

_PHRASES = [
    "sinus rhythm", "sinus bradycardia", "sinus tachycardia", "atrial fibrillation",
    "left axis deviation", "right bundle branch block", "left ventricular hypertrophy",
    "incomplete right bundle branch block", "first degree av block", "normal ecg",
    "st depression in leads v4-v6", "t wave inversion in II, III and aVF",
    "QRS duration 120 ms", "prolonged QT interval (QTc 480 ms)", "premature ventricular beats",
    "inferior myocardial infarction, age undetermined", "nonspecific ST-T changes",
    "low voltage in limb leads", "poor R-wave progression", "borderline ECG",
    "The heart rate is 72 bpm.", "abnormal; consider ischemia!", "no significant changes",
]


def make_pairs(n: int, seed: int = 0, max_refs: int = 1) -> tuple[list[str], list[list[str]]]:
    """``n`` hypotheses and reference lists (1..max_refs each) built from ECG phrases."""
    rng = random.Random(seed)

    def report() -> str:
        parts = rng.sample(_PHRASES, rng.randint(1, 5))
        sep = rng.choice([", ", ". ", "; ", " and "])
        return sep.join(parts)

    hyps, refs = [], []
    for i in range(n):
        rs = [report() for _ in range(rng.randint(1, max_refs))]
        mode = i % 4
        if mode == 0:
            h = rs[0]                                   # identical
        elif mode == 1:
            words = rs[0].split()
            rng.shuffle(words)
            h = " ".join(words[: max(1, len(words) - rng.randint(0, 3))])
        elif mode == 2:
            h = report()                                # unrelated report
        else:
            h = rs[0].replace("sinus", "sinuses").replace("block", "blocks")  # stems
        hyps.append(h)
        refs.append(rs)
    return hyps, refs

# --------------------------------------------------------------------------------------------
# a fake OpenAI-compatible chat server (LLM-as-judge tests)
# --------------------------------------------------------------------------------------------

class ChatReplies:
    """HTTP handler factory returning canned chat completions in order; ``"HTTP500"`` answers
    status 500. Every request is recorded in :attr:`requests` (path, JSON body, Authorization).
    """

    def __init__(self, replies: list[str]) -> None:
        self.replies = replies
        self.requests: list[dict[str, Any]] = []

    def handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "body": body,
                                       "auth": self.headers.get("Authorization")})
                content = outer.replies.pop(0) if outer.replies else "???"
                if content == "HTTP500":
                    self.send_response(500)
                    self.end_headers()
                    return
                data = json.dumps({"choices": [{"message": {"role": "assistant",
                                                            "content": content}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def load_script(path: Path, name: str) -> ModuleType:
    """Import the script at ``path`` (e.g. a ``jobs/bench`` benchmark) as module ``name``
    without running its ``main``; registered in ``sys.modules`` so its dataclasses resolve
    their module."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
