"""Normalisation policies on synthetic signals with known content."""

from __future__ import annotations

import numpy as np
import pytest

from ecglm.config import ConfigError, load_config
from ecglm.config.schema import NormalizeConfig
from ecglm.data import LEADS, RawECG, RecordError
from ecglm.data.normalize import normalize

FS = 500


def _ecg(seconds: float = 10.0, fs: int = FS, amp: float = 1.0) -> np.ndarray:
    """(12, T) mV: a 1.2 Hz 'beat' of amplitude ``amp`` with a different phase per lead."""
    t = np.arange(int(seconds * fs)) / fs
    return np.stack([amp * np.sin(2 * np.pi * 1.2 * t + k) for k in range(12)])


def _raw(x: np.ndarray, names: list[str] | None = None, fs: float = FS) -> RawECG:
    return RawECG("rec1", x, list(names or LEADS), fs)


def test_clean_record_passes_unchanged() -> None:
    x = _ecg()
    rec = normalize(_raw(x), NormalizeConfig(), FS, 5000)
    assert rec.signal.dtype == np.float32 and rec.signal.shape == (12, 5000)
    np.testing.assert_allclose(rec.signal, x, atol=1e-6)
    assert rec.lead_mask.all() and rec.flags == [] and rec.fs == FS


def test_lead_order_case_and_extra_channels() -> None:
    x = _ecg()
    perm = [11, 3, 0, 5, 1, 2, 4, 6, 7, 8, 9, 10]
    names = [LEADS[i].upper() for i in perm] + ["vx", "vy"]
    shuffled = np.concatenate([x[perm], np.zeros((2, x.shape[1]))])
    rec = normalize(_raw(shuffled, names), NormalizeConfig(), FS, 5000)
    np.testing.assert_allclose(rec.signal, x, atol=1e-6)
    assert rec.metadata["dropped_leads"] == ["vx", "vy"]
    with pytest.raises(RecordError, match=r"extra channel\(s\) \['vx', 'vy'\]"):
        normalize(_raw(shuffled, names), NormalizeConfig(extra_leads="error"), FS, 5000)


def test_missing_leads_error_or_mask() -> None:
    x = _ecg()[:8]
    names = list(LEADS[:8])
    with pytest.raises(RecordError) as err:
        normalize(_raw(x, names), NormalizeConfig(), FS, 5000)
    assert err.value.field == "leads" and "V3, V4, V5, V6" in err.value.reason
    rec = normalize(_raw(x, names), NormalizeConfig(missing_leads="mask"), FS, 5000)
    assert rec.lead_mask.tolist() == [True] * 8 + [False] * 4
    assert not rec.signal[8:].any() and rec.flags == ["masked leads: V3, V4, V5, V6"]


def test_nonfinite_policies() -> None:
    x = _ecg()
    x[4, 100:110] = np.nan
    x[7, 200] = np.inf
    with pytest.raises(RecordError) as err:
        normalize(_raw(x), NormalizeConfig(), FS, 5000)
    assert err.value.field == "signal" and "aVL (10 samples)" in err.value.reason
    assert "V2 (1 samples)" in err.value.reason
    rec = normalize(_raw(x), NormalizeConfig(nonfinite="interpolate"), FS, 5000)
    clean = _ecg()
    np.testing.assert_allclose(rec.signal[4], clean[4], atol=5e-3)  # linear over 20 ms
    assert rec.flags[0].startswith("nonfinite: interpolated aVL (10 samples)")
    zero = normalize(_raw(x), NormalizeConfig(nonfinite="zero"), FS, 5000)
    assert not zero.signal[4, 100:110].any() and zero.signal[7, 200] == 0
    # a lead mostly NaN counts as missing: an error, or masked when allowed
    x[0, :1000] = np.nan
    with pytest.raises(RecordError, match="missing lead"):
        normalize(_raw(x), NormalizeConfig(nonfinite="interpolate"), FS, 5000)
    masked = normalize(_raw(x), NormalizeConfig(nonfinite="interpolate", missing_leads="mask"),
                       FS, 5000)
    assert not masked.lead_mask[0] and masked.lead_mask[1:].all()


def test_amplitude_plausibility() -> None:
    small = _ecg(amp=0.0005)  # a gain 2000x too large
    with pytest.raises(RecordError) as err:
        normalize(_raw(small), NormalizeConfig(), FS, 5000)
    assert err.value.field == "amplitude" and "min_peak_to_peak_mv" in err.value.reason
    flagged = normalize(_raw(small), NormalizeConfig(amplitude_policy="flag"), FS, 5000)
    assert flagged.flags[0].startswith("amplitude:")
    big = _ecg(amp=1000.0)  # microvolts written as mV
    with pytest.raises(RecordError, match="max_abs_mv"):
        normalize(_raw(big), NormalizeConfig(), FS, 5000)
    # a DC offset alone is not an amplitude problem (the median is removed first)
    normalize(_raw(_ecg() + 40.0), NormalizeConfig(), FS, 5000)


def test_resampling_is_anti_aliased() -> None:
    fs_in, fs_out = 1000, 250
    t = np.arange(10 * fs_in) / fs_in
    x = np.tile(np.sin(2 * np.pi * 5 * t) + 0.5 * np.sin(2 * np.pi * 200 * t), (12, 1))
    for method in ("polyphase", "fft"):
        rec = normalize(_raw(x, fs=fs_in), NormalizeConfig(resample_method=method), fs_out, 2500)
        t_out = np.arange(2500) / fs_out
        want = np.sin(2 * np.pi * 5 * t_out)  # the 200 Hz tone is above the new Nyquist
        err = np.abs(rec.signal[0, 50:-50] - want[50:-50]).max()
        assert err < 0.02, (method, err)  # naive decimation would alias it to 50 Hz (0.5 mV)
    odd = normalize(_raw(_ecg(fs=257), fs=257.0), NormalizeConfig(), FS, 5000)
    np.testing.assert_allclose(odd.signal[0, 100:4900], _ecg()[0, 100:4900], atol=0.01)


def test_crop_pad_and_min_seconds() -> None:
    x = _ecg(seconds=12)
    start = normalize(_raw(x), NormalizeConfig(), FS, 5000).signal
    center = normalize(_raw(x), NormalizeConfig(crop="center"), FS, 5000).signal
    np.testing.assert_allclose(start, x[:, :5000], atol=1e-6)
    np.testing.assert_allclose(center, x[:, 500:5500], atol=1e-6)
    short = _ecg(seconds=4)
    zero = normalize(_raw(short), NormalizeConfig(), FS, 5000).signal
    edge = normalize(_raw(short), NormalizeConfig(pad="edge"), FS, 5000).signal
    assert not zero[:, 2000:].any()
    np.testing.assert_allclose(edge[:, 2000:], np.repeat(short[:, -1:], 3000, axis=1), atol=1e-6)
    with pytest.raises(RecordError) as err:
        normalize(_raw(_ecg(seconds=0.5)), NormalizeConfig(), FS, 5000)
    assert err.value.field == "length"


def test_filters() -> None:
    t = np.arange(5000) / FS
    ecg = np.sin(2 * np.pi * 8 * t)
    drift = 2.0 * np.sin(2 * np.pi * 0.1 * t)
    hum = 0.3 * np.sin(2 * np.pi * 50 * t)
    x = np.tile(ecg + drift + hum, (12, 1))
    base = normalize(_raw(x), NormalizeConfig(baseline_filter=True), FS, 5000).signal[0]
    inner = slice(500, -500)
    assert np.abs(base[inner] - (ecg + hum)[inner]).max() < 0.1
    notch = normalize(_raw(x), NormalizeConfig(powerline_hz=50), FS, 5000).signal[0]
    assert np.abs(notch[inner] - (ecg + drift)[inner]).max() < 0.05
    band = normalize(_raw(x), NormalizeConfig(bandpass=[1.0, 40.0]), FS, 5000).signal[0]
    assert np.abs(band[inner] - ecg[inner]).max() < 0.1


def test_policy_config_keys(repo_root) -> None:
    cfg = load_config(repo_root / "jobs/configs/tiny.yaml",
                      ["data.normalize.missing_leads=mask", "data.normalize.bandpass=[0.5, 40]"])
    assert cfg.data.normalize.missing_leads == "mask" and cfg.data.normalize.bandpass == [0.5, 40]
    for override, key in [("data.normalize.bandpass=[0.5, 60]", "data.normalize.bandpass"),
                          ("data.normalize.powerline_hz=55", "data.normalize.powerline_hz"),
                          ("data.normalize.nonfinite=drop", "data.normalize.nonfinite"),
                          ("data.normalize.min_leads=0", "data.normalize.min_leads")]:
        with pytest.raises(ConfigError) as err:
            load_config(repo_root / "jobs/configs/tiny.yaml", [override])
        assert str(err.value).startswith(key)
