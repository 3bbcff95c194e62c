"""Turn a :class:`RawECG` into the canonical :class:`ECGRecord` under explicit policies.

Order of the steps (each policy is a field of :class:`ecglm.config.schema.NormalizeConfig`):

1. lead matching: names compared case-insensitively (``AVR``/``aVR``/``avr``, ``Lead I``,
   ``DII``); channels that are not one of the 12 leads are dropped or rejected;
2. non-finite samples: reject, interpolate or zero (too many in a lead: the lead is missing);
3. missing leads: reject, or zero-fill and mask;
4. amplitude plausibility (wrong gain/units): reject or flag;
5. optional baseline (high-pass), band-pass and powerline notch filters at the source rate;
6. anti-aliased resampling to the target rate (polyphase FIR or FFT);
7. crop/pad to the target length.

All arrays are ``(n_leads, T)``; amplitudes in mV, rates in Hz.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ecglm.config.schema import NormalizeConfig
from ecglm.data.canonical import LEADS, ECGRecord, RawECG
from ecglm.data.errors import RecordError

_ALIASES: dict[str, str] = {
    **{lead.lower(): lead for lead in LEADS},
    "di": "I", "dii": "II", "diii": "III", "d1": "I", "d2": "II", "d3": "III",
}
NOTCH_Q = 30.0
"""Quality factor of the powerline notch (bandwidth = f0 / Q, ~1.7 Hz at 50 Hz)."""


def canonical_lead(name: str) -> str | None:
    """The :data:`LEADS` name of channel ``name`` or ``None`` if it is not one of the 12.

    Case, spaces, ``-``/``_`` and a ``lead`` prefix are ignored: ``AVR``, ``avr``, ``Lead aVR``,
    ``a_VR`` all give ``aVR``; ``DII`` gives ``II``; ``MLII``, ``vx``, ``ECG 1`` give ``None``.
    """
    key = "".join(ch for ch in str(name).strip().lower() if ch not in " -_")
    if key.startswith("lead"):
        key = key[4:]
    return _ALIASES.get(key)


def match_leads(names: list[str]) -> tuple[dict[str, int], list[str]]:
    """Map each canonical lead present in ``names`` to its first channel index.

    Returns:
        ``({lead: channel}, extra)`` where ``extra`` lists the channel names that are not used
        (not one of the 12 leads, or a duplicate).
    """
    index: dict[str, int] = {}
    extra: list[str] = []
    for i, name in enumerate(names):
        lead = canonical_lead(name)
        if lead is None or lead in index:
            extra.append(str(name))
        else:
            index[lead] = i
    return index, extra


def interpolate_nonfinite(x: np.ndarray) -> np.ndarray:
    """Replace non-finite samples of each row of ``x`` ``(n, T)`` by linear interpolation
    between finite neighbours (edges take the nearest finite value). Rows without any finite
    value are returned as zeros."""
    out = np.array(x, dtype=np.float64, copy=True)
    t = np.arange(out.shape[1])
    for row in out:
        good = np.isfinite(row)
        if good.all():
            continue
        row[~good] = np.interp(t[~good], t[good], row[good]) if good.any() else 0.0
    return out


def resample(x: np.ndarray, fs: float, target_fs: int, method: str = "polyphase") -> np.ndarray:
    """Anti-aliased resampling of ``x`` ``(n, T)`` from ``fs`` Hz to ``target_fs`` Hz.

    ``polyphase``: :func:`scipy.signal.resample_poly` with the rational ratio closest to
    ``target_fs / fs`` (denominator <= 1000; Kaiser-windowed low-pass FIR, linear edge padding);
    ``fft``: :func:`scipy.signal.resample` (ideal low-pass, assumes periodicity).
    Output length is ``round(T * target_fs / fs)``.
    """
    if math.isclose(fs, target_fs):
        return x
    from scipy import signal as sps  # local: scipy.signal takes ~0.7 s to import

    n_out = int(round(x.shape[1] * target_fs / fs))
    if method == "fft":
        return sps.resample(x, n_out, axis=1)
    if method != "polyphase":
        raise ValueError(f"data.normalize.resample_method: expected 'polyphase' or 'fft', "
                         f"got {method!r}")
    ratio = Fraction(target_fs) / Fraction(fs).limit_denominator(1000)
    y = sps.resample_poly(x, ratio.numerator, ratio.denominator, axis=1, padtype="line")
    if y.shape[1] > n_out:
        return y[:, :n_out]
    if y.shape[1] < n_out:
        return np.pad(y, ((0, 0), (0, n_out - y.shape[1])), mode="edge")
    return y


def fit_to_length(x: np.ndarray, n_samples: int, crop: str = "start",
                  pad: str = "zero") -> np.ndarray:
    """Crop (window at the ``start`` or ``center``) or pad (at the end with ``zero`` or the
    ``edge`` value) ``x`` ``(n, T)`` to ``(n, n_samples)``."""
    t = x.shape[1]
    if t >= n_samples:
        start = (t - n_samples) // 2 if crop == "center" else 0
        return x[:, start:start + n_samples]
    if t == 0:
        return np.zeros((x.shape[0], n_samples), dtype=x.dtype)
    return np.pad(x, ((0, 0), (0, n_samples - t)), mode="edge" if pad == "edge" else "constant")


def apply_filters(x: np.ndarray, fs: float, policy: NormalizeConfig) -> np.ndarray:
    """Zero-phase baseline high-pass, band-pass and powerline notch on ``x`` ``(n, T)`` mV.

    Cut-offs at or above the Nyquist rate ``fs / 2`` of the source are skipped (the signal holds
    nothing there, and resampling low-passes anyway).
    """
    if not (policy.baseline_filter or policy.bandpass or policy.powerline_hz):
        return x
    from scipy import signal as sps  # local: scipy.signal takes ~0.7 s to import

    nyq = fs / 2.0
    pad = max(0, min(x.shape[1] - 1, 3 * (2 * policy.filter_order + 1)))
    if policy.baseline_filter and policy.baseline_cutoff_hz < nyq:
        sos = sps.butter(policy.filter_order, policy.baseline_cutoff_hz, btype="highpass",
                         fs=fs, output="sos")
        x = sps.sosfiltfilt(sos, x, axis=1, padlen=pad)
    if policy.bandpass is not None:
        lo, hi = policy.bandpass
        if hi < nyq:
            sos = sps.butter(policy.filter_order, [lo, hi], btype="bandpass", fs=fs, output="sos")
        elif lo < nyq:
            sos = sps.butter(policy.filter_order, lo, btype="highpass", fs=fs, output="sos")
        else:
            sos = None
        if sos is not None:
            x = sps.sosfiltfilt(sos, x, axis=1, padlen=pad)
    if policy.powerline_hz is not None and policy.powerline_hz < nyq:
        b, a = sps.iirnotch(policy.powerline_hz, NOTCH_Q, fs=fs)
        x = sps.filtfilt(b, a, x, axis=1, padlen=min(pad, x.shape[1] - 1))
    return x


def _nonfinite(x: np.ndarray, present: dict[str, int], policy: NormalizeConfig,
               record: str, flags: list[str]) -> tuple[np.ndarray, dict[str, int]]:
    """Apply ``policy.nonfinite`` to the channels in ``present``; returns the repaired signal and
    the leads that remain usable."""
    rows = {lead: x[ch] for lead, ch in present.items()}
    bad = {lead: int((~np.isfinite(row)).sum()) for lead, row in rows.items()}
    bad = {lead: n for lead, n in bad.items() if n}
    if not bad:
        return x, present
    detail = ", ".join(f"{lead} ({n} samples)" for lead, n in bad.items())
    if policy.nonfinite == "reject":
        raise RecordError(record, "signal", f"non-finite values (NaN/inf) in lead(s) {detail} "
                                            f"(data.normalize.nonfinite: reject)")
    t = x.shape[1]
    keep = dict(present)
    out = np.array(x, dtype=np.float64, copy=True)
    for lead, n in bad.items():
        if n / t > policy.max_nonfinite_fraction:
            del keep[lead]
            continue
        row = out[present[lead]]
        out[present[lead]] = (interpolate_nonfinite(row[None])[0]
                              if policy.nonfinite == "interpolate"
                              else np.where(np.isfinite(row), row, 0.0))
    dropped = [lead for lead in bad if lead not in keep]
    flags.append(f"nonfinite: {policy.nonfinite}d {detail}"
                 + (f"; lead(s) {', '.join(dropped)} over data.normalize.max_nonfinite_fraction="
                    f"{policy.max_nonfinite_fraction} treated as missing" if dropped else ""))
    return out, keep


def check_amplitude(x: np.ndarray, leads: list[str], policy: NormalizeConfig, record: str,
                    flags: list[str]) -> None:
    """Amplitude plausibility of ``x`` ``(n_present, T)`` mV (rows named by ``leads``).

    Implausible when the largest peak-to-peak amplitude is below
    ``policy.min_peak_to_peak_mv`` (e.g. a gain 1000x too large) or some ``|x - median|``
    exceeds ``policy.max_abs_mv`` (e.g. microvolts labelled as mV). ``reject`` raises,
    ``flag`` appends to ``flags``. Flat leads (peak-to-peak 0) are always flagged.
    """
    p2p = x.max(axis=1) - x.min(axis=1)
    flat = [lead for lead, v in zip(leads, p2p) if v <= 0.0]
    if flat and len(flat) < len(leads):
        flags.append(f"flat leads: {', '.join(flat)}")
    biggest = float(p2p.max())
    dev = float(np.abs(x - np.median(x, axis=1, keepdims=True)).max())
    problem = None
    if biggest < policy.min_peak_to_peak_mv:
        problem = (f"implausible amplitude: largest peak-to-peak {biggest:.3g} mV < "
                   f"data.normalize.min_peak_to_peak_mv={policy.min_peak_to_peak_mv} mV "
                   f"(header gain or units wrong?)")
    elif dev > policy.max_abs_mv:
        worst = leads[int(np.argmax(np.abs(x - np.median(x, axis=1, keepdims=True))
                                    .max(axis=1)))]
        problem = (f"implausible amplitude: |x - median| reaches {dev:.3g} mV in lead {worst} "
                   f"> data.normalize.max_abs_mv={policy.max_abs_mv} mV (units wrong?)")
    if problem is None:
        return
    if policy.amplitude_policy == "reject":
        raise RecordError(record, "amplitude", problem)
    flags.append(f"amplitude: {problem}")


def normalize(raw: RawECG, policy: NormalizeConfig, target_fs: int,
              n_samples: int) -> ECGRecord:
    """Canonical 12-lead ECG from ``raw`` under ``policy``.

    Args:
        raw: reader output, ``(n_channels, T)`` mV at ``raw.fs`` Hz.
        policy: the ``data.normalize`` section.
        target_fs: output rate in Hz.
        n_samples: output samples per lead.

    Returns:
        :class:`ECGRecord` with float32 ``(12, n_samples)`` mV.

    Raises:
        RecordError: the record breaks a policy; ``field`` is one of ``signal``, ``fs``,
            ``length``, ``leads``, ``amplitude``; the reason names the expected value.
    """
    record = raw.record_id
    x = np.asarray(raw.signal)
    if x.ndim != 2 or x.shape[1] == 0 or x.shape[0] == 0:
        raise RecordError(record, "signal", f"empty signal (shape {x.shape}), expected "
                                            f"(n_channels, T) with T > 0")
    if x.shape[0] != len(raw.lead_names):
        raise RecordError(record, "signal", f"{x.shape[0]} channels but {len(raw.lead_names)} "
                                            f"lead names {raw.lead_names}")
    if not (math.isfinite(raw.fs) and raw.fs > 0):
        raise RecordError(record, "fs", f"sampling rate {raw.fs!r}, expected > 0 Hz")
    seconds = x.shape[1] / raw.fs
    if seconds < policy.min_seconds:
        raise RecordError(record, "length", f"{seconds:.3g} s long, expected >= "
                                            f"data.normalize.min_seconds={policy.min_seconds} s")
    present, extra = match_leads(raw.lead_names)
    if extra and policy.extra_leads == "error":
        raise RecordError(record, "leads", f"extra channel(s) {extra} "
                                           f"(data.normalize.extra_leads: error)")
    flags: list[str] = []
    x, usable = _nonfinite(x, present, policy, record, flags)
    missing = [lead for lead in LEADS if lead not in usable]
    if missing:
        unknown = [n for n in raw.lead_names if canonical_lead(n) is None]
        hint = f"; unrecognised channel name(s) {unknown}" if unknown else ""
        if policy.missing_leads == "error" or not usable:
            raise RecordError(record, "leads", f"missing lead(s) {', '.join(missing)}; header "
                                               f"has {list(raw.lead_names)}{hint}")
        if len(usable) < policy.min_leads:
            raise RecordError(record, "leads", f"only {len(usable)} of 12 leads present, "
                                               f"expected >= data.normalize.min_leads="
                                               f"{policy.min_leads}{hint}")
        flags.append(f"masked leads: {', '.join(missing)}")
    order = [lead for lead in LEADS if lead in usable]
    sub = np.asarray(x[[usable[lead] for lead in order]], dtype=np.float64)
    check_amplitude(sub, order, policy, record, flags)
    sub = apply_filters(sub, raw.fs, policy)
    sub = fit_to_length(resample(sub, raw.fs, target_fs, policy.resample_method), n_samples,
                        policy.crop, policy.pad)
    out = np.zeros((len(LEADS), n_samples), dtype=np.float32)
    mask = np.zeros(len(LEADS), dtype=bool)
    for row, lead in zip(sub, order):
        k = LEADS.index(lead)
        out[k] = row
        mask[k] = True
    meta = dict(raw.metadata)
    meta.update(source_fs=float(raw.fs), source_seconds=round(seconds, 4),
                dropped_leads=extra)
    return ECGRecord(record_id=record, signal=out, fs=int(target_fs), lead_mask=mask,
                     patient_id=raw.patient_id, metadata=meta, flags=flags)
