"""Turn a :class:`RawECG` into the canonical :class:`ECGRecord` under explicit policies.

Order of the steps (each policy is a field of :class:`ecglm.config.schema.NormalizeConfig`):

1. lead matching: names compared case-insensitively (``AVR``/``aVR``/``avr``, ``Lead I``,
   ``DII``); channels that are not one of the 12 leads are dropped or rejected;
2. non-finite samples: reject, interpolate or zero (too many in a lead: the lead is missing);
3. missing leads: reject, or zero-fill and mask;
4. amplitude plausibility (wrong gain/units): reject or flag;
5.-7. :func:`ecglm.data.preprocess.preprocess`, the signal path shared with serving:
   optional baseline (high-pass), band-pass and powerline notch filters at the source rate,
   anti-aliased resampling to the target rate (polyphase FIR or FFT), crop/pad to the target
   length.

All arrays are ``(n_leads, T)``; amplitudes in mV, rates in Hz.
"""

from __future__ import annotations

import math

import numpy as np

from ecglm.config.schema import NormalizeConfig
from ecglm.data.canonical import LEADS, ECGRecord, RawECG
from ecglm.data.errors import RecordError
from ecglm.data.preprocess import preprocess

_ALIASES: dict[str, str] = {
    **{lead.lower(): lead for lead in LEADS},
    "di": "I", "dii": "II", "diii": "III", "d1": "I", "d2": "II", "d3": "III",
}


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
    mask = np.array([lead in usable for lead in LEADS])
    full = np.zeros((len(LEADS), sub.shape[1]), dtype=np.float64)
    full[mask] = sub
    out = preprocess(full, raw.fs, policy, target_fs, n_samples, mask)
    meta = dict(raw.metadata)
    meta.update(source_fs=float(raw.fs), source_seconds=round(seconds, 4),
                dropped_leads=extra)
    return ECGRecord(record_id=record, signal=out, fs=int(target_fs), lead_mask=mask,
                     patient_id=raw.patient_id, metadata=meta, flags=flags)
