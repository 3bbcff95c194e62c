"""Robustness to additive Gaussian noise (MEIT's noise study, applied to ECG-QA).

For a target SNR in dB, every lead of every ECG gets white Gaussian noise whose power is
``P_signal / 10**(SNR / 10)``, where ``P_signal`` is that lead's mean squared amplitude (mV^2)
over the recording. ``SNR = +inf`` adds nothing; a silent (all-zero) lead stays silent.

The noise is seeded by ``(seed, ecg_id, SNR)``: the same ECG gets the same noise whichever QA
row it appears in and whatever the row order, and re-running gives identical inputs.
Noised rows are re-encoded into the shard format (int16 microvolts), so evaluation reuses the
normal prediction path (the QA task's ``predict``) unchanged.
"""

from __future__ import annotations

import dataclasses
import html
import math
import zlib
from typing import Any, Callable, Sequence

import numpy as np

from ecglm.data.rows import ECGRow
from ecglm.data.sharding import encode_signals
from ecglm.evaluation.report import curve_plot


def snr_key(snr_db: float) -> str:
    """Name of an SNR in metric keys: ``inf``, ``20``, ``-5``, ``2.5``."""
    if math.isinf(snr_db):
        return "inf" if snr_db > 0 else "-inf"
    return f"{snr_db:g}"


def noise_rng(seed: int, ecg_id: int, snr_db: float) -> np.random.Generator:
    """Generator for one ECG at one SNR (independent of row order)."""
    tag = zlib.crc32(snr_key(snr_db).encode())
    return np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF,
                                                         ecg_id & 0xFFFFFFFFFFFF, tag]))


def add_gaussian_noise(signal: np.ndarray, snr_db: float, rng: np.random.Generator
                       ) -> np.ndarray:
    """Add white Gaussian noise at ``snr_db`` per lead.

    Args:
        signal: ``(..., T)`` float mV (e.g. ``(12, T)``); power is taken over the last axis.
        snr_db: target signal-to-noise ratio in dB; ``+inf`` returns a copy of ``signal``.
        rng: noise source.

    Returns:
        float32 array of ``signal``'s shape.
    """
    x = np.asarray(signal, dtype=np.float64)
    if math.isinf(snr_db) and snr_db > 0:
        return x.astype(np.float32)
    power = np.mean(x ** 2, axis=-1, keepdims=True)              # (..., 1) mV^2
    sigma = np.sqrt(power / 10.0 ** (snr_db / 10.0))             # (..., 1) mV
    return (x + sigma * rng.standard_normal(x.shape)).astype(np.float32)


def noisy_rows(rows: Sequence[ECGRow], snr_db: float, seed: int) -> list[ECGRow]:
    """Copies of QA rows whose ``signals`` carry noise at ``snr_db``.

    Args:
        rows: QA shard rows (``signals`` bytes, ``n_ecg``, ``n_samples``, ``ecg_ids``).
        snr_db: SNR in dB (``+inf``: the rows' signals, re-encoded unchanged).
        seed: noise seed.
    """
    out = []
    for r in rows:
        sig = r.ecgs()                                           # (n_ecg, 12, T) mV
        noised = np.stack([add_gaussian_noise(sig[k], snr_db,
                                              noise_rng(seed, r.ecg_ids[k], snr_db))
                           for k in range(r.n_ecg)])
        out.append(dataclasses.replace(r, signals=encode_signals(noised)))
    return out


def measured_snr_db(clean: np.ndarray, noised: np.ndarray) -> float:
    """Mean over leads of ``10 log10(P_signal / P_noise)`` (leads with zero power skipped).

    Args:
        clean, noised: ``(..., T)`` arrays in the same unit.
    """
    c = np.asarray(clean, np.float64)
    n = np.asarray(noised, np.float64) - c
    ps, pn = np.mean(c ** 2, axis=-1), np.mean(n ** 2, axis=-1)
    ok = (ps > 0) & (pn > 0)
    return float(np.mean(10 * np.log10(ps[ok] / pn[ok]))) if ok.any() else math.inf


def noise_curve(predict_fn: Callable[[list[ECGRow]], Any], score_fn: Callable[[Any], dict],
                rows: Sequence[ECGRow], snrs_db: Sequence[float], seed: int
                ) -> dict[str, dict[str, float]]:
    """Metrics at every SNR.

    Args:
        predict_fn: rows -> predictions (e.g. ``lambda r: predict(model, r, cfg)``).
        score_fn: predictions -> metric dict (e.g. :func:`ecglm.evaluation.qa.score`).
        snrs_db: SNRs in dB, evaluated in the given order.

    Returns:
        ``snr_key(snr) -> metrics`` (insertion order = ``snrs_db``).
    """
    out: dict[str, dict[str, float]] = {}
    for snr in snrs_db:
        print(f"[eval] noise: SNR {snr_key(snr)} dB", flush=True)
        out[snr_key(float(snr))] = score_fn(predict_fn(noisy_rows(rows, float(snr), seed)))
    return out


def curve_metrics(curve: dict[str, dict[str, float]]) -> dict[str, float]:
    """Flat ``noise/<snr>/<metric>`` keys (``em/...`` only) for MLflow."""
    return {f"noise/{snr}/{k}": v for snr, m in curve.items() for k, v in m.items()
            if k.startswith("em/")}


def curve_section(curve: dict[str, dict[str, float]]) -> tuple[str, str]:
    """(heading, HTML) for ``report.html``: EM vs SNR plot (inf drawn at the right end) and
    a table of EM per question type and SNR."""
    keys = list(curve)
    finite = [float(k) for k in keys if k not in ("inf", "-inf")]
    right = (max(finite) + 10.0) if finite else 0.0
    xs = [right if k == "inf" else float(k) for k in keys]
    order = np.argsort(xs)
    types = sorted({k[3:] for m in curve.values() for k in m
                    if k.startswith("em/") and k.count("/") == 1})
    series = {t: [curve[keys[i]].get(f"em/{t}", float("nan")) for i in order]
              for t in types}
    img = curve_plot([xs[i] for i in order], series, "SNR (dB; rightmost point = clean)"
                     if "inf" in keys else "SNR (dB)", "exact match",
                     "Exact match vs Gaussian noise")
    head = "".join(f"<th>{html.escape(keys[i])} dB</th>" for i in order)
    body = "".join("<tr><td>" + html.escape(t) + "</td>" + "".join(
        f"<td>{curve[keys[i]].get(f'em/{t}', float('nan')):.3f}</td>" for i in order)
        + "</tr>" for t in types)
    return ("Robustness: Gaussian noise", f"<img alt='em vs snr' src='{img}'>"
            f"<table><tr><th>EM</th>{head}</tr>{body}</table>")
