"""read_wfdb on real PTB-XL records and on corrupted copies."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import wfdb

from ecglm.data import LEADS, RecordError, read_wfdb
from tests.helpers import (RECORDS100, RECORDS500, copy_record, put_nan, rename_lead,
                           truncate_dat)


def _rdsamp_canonical(path: Path) -> np.ndarray:
    """Reference: wfdb.rdsamp columns reordered by name to LEADS, (12, T) mV."""
    x, fields = wfdb.rdsamp(str(path))
    names = [n.lower() for n in fields["sig_name"]]
    assert all(u == "mV" for u in fields["units"])
    return np.stack([x[:, names.index(lead.lower())] for lead in LEADS])


def test_real_record_matches_wfdb(shared_data: Path) -> None:
    path = RECORDS500 / "00001_hr"
    x, fs = read_wfdb(path, 500, 5000)
    assert fs == 500 and x.shape == (12, 5000) and x.dtype == np.float32
    ref = _rdsamp_canonical(path)
    np.testing.assert_allclose(x, ref, atol=1e-6)
    # plausible millivolt range: not uV (x1000) and not V (/1000)
    assert 0.2 < np.abs(x).max() < 10.0
    assert np.all(x.std(axis=1) > 0.01)
    # Einthoven: III = II - I, within 12-bit quantisation of the stored leads
    np.testing.assert_allclose(x[2], x[1] - x[0], atol=0.01)
    # aVR = -(I + II) / 2
    np.testing.assert_allclose(x[3], -(x[0] + x[1]) / 2, atol=0.01)


def test_100hz_record_resampled_to_500hz(shared_data: Path) -> None:
    low, fs = read_wfdb(RECORDS100 / "00001_lr", 500, 5000)
    high, _ = read_wfdb(RECORDS500 / "00001_hr", 500, 5000)
    assert fs == 500 and low.shape == (12, 5000)
    # the 100 Hz file is a downsampled copy of the same ECG: same waveform after upsampling
    for lead in range(12):
        r = np.corrcoef(low[lead], high[lead])[0, 1]
        assert r > 0.85, (LEADS[lead], r)


def test_crop_and_pad(shared_data: Path) -> None:
    full, _ = read_wfdb(RECORDS500 / "00002_hr", 500, 5000)
    short, _ = read_wfdb(RECORDS500 / "00002_hr", 500, 3000)
    long, _ = read_wfdb(RECORDS500 / "00002_hr", 500, 6000)
    np.testing.assert_array_equal(short, full[:, :3000])
    np.testing.assert_array_equal(long[:, :5000], full)
    assert np.all(long[:, 5000:] == 0)


def test_units_lead_names_order_and_extra_leads(shared_data: Path, tmp_path: Path) -> None:
    """uV header, lower-case shuffled leads plus an extra channel -> same canonical ECG."""
    x, fields = wfdb.rdsamp(str(RECORDS500 / "00003_hr"))
    perm = [11, 3, 0, 5, 1, 2, 4, 6, 7, 8, 9, 10]
    p_uv = np.concatenate([x[:, perm], x[:, :1]], axis=1) * 1000.0
    names = [fields["sig_name"][i].lower() for i in perm] + ["vx"]
    wfdb.wrsamp("uv_rec", fs=500, units=["uV"] * 13, sig_name=names, p_signal=p_uv,
                fmt=["16"] * 13, adc_gain=[1.0] * 13, baseline=[0] * 13, write_dir=str(tmp_path))
    got, _ = read_wfdb(tmp_path / "uv_rec", 500, 5000)
    ref, _ = read_wfdb(RECORDS500 / "00003_hr", 500, 5000)
    np.testing.assert_allclose(got, ref, atol=1e-6)
    # same record with volt units (gain 1e6 adu/V) and the micro sign
    rec = copy_record(RECORDS500 / "00003_hr", tmp_path, "volts")
    hea = rec.with_suffix(".hea")
    hea.write_text(hea.read_text().replace("1000.0(0)/mV", "1000000.0(0)/V"))
    np.testing.assert_allclose(read_wfdb(rec, 500, 5000)[0], ref, atol=1e-6)
    # wfdb itself drops the micro sign (reads "V"): the reader must parse the header
    hea.write_text(hea.read_text().replace("1000000.0(0)/V", "1.0(0)/\u00b5V"))
    np.testing.assert_allclose(read_wfdb(rec, 500, 5000)[0], ref, atol=1e-6)
    hea.write_text(hea.read_text().replace("\u00b5V", "\u03bcV"))  # greek mu
    np.testing.assert_allclose(read_wfdb(rec, 500, 5000)[0], ref, atol=1e-6)


@pytest.mark.parametrize("n_bytes", [50_000, 48_000, 0])
def test_truncated_or_empty_dat(shared_data: Path, tmp_path: Path, n_bytes: int) -> None:
    rec = copy_record(RECORDS500 / "00001_hr", tmp_path, "trunc")
    truncate_dat(rec, n_bytes)
    with pytest.raises(RecordError) as err:
        read_wfdb(rec, 500, 5000)
    assert err.value.record == str(rec)
    assert err.value.field == "file"
    assert "truncated or corrupt" in str(err.value)
    assert str(err.value).startswith(f"record {rec}: file: ")


def test_missing_files(tmp_path: Path, shared_data: Path) -> None:
    with pytest.raises(RecordError, match="missing file .*nothere.hea"):
        read_wfdb(tmp_path / "nothere", 500, 5000)
    rec = copy_record(RECORDS500 / "00001_hr", tmp_path, "nodat")
    rec.with_suffix(".dat").unlink()
    with pytest.raises(RecordError, match="missing file .*nodat.dat") as err:
        read_wfdb(rec, 500, 5000)
    assert err.value.field == "file"


def test_nan_samples(shared_data: Path, tmp_path: Path) -> None:
    rec = copy_record(RECORDS500 / "00001_hr", tmp_path, "nan")
    put_nan(rec, LEADS.index("V3"))
    with pytest.raises(RecordError) as err:
        read_wfdb(rec, 500, 5000)
    assert err.value.field == "signal"
    assert "non-finite" in err.value.reason and "V3" in err.value.reason
    assert str(rec) in str(err.value)


def test_missing_lead(shared_data: Path, tmp_path: Path) -> None:
    rec = copy_record(RECORDS500 / "00001_hr", tmp_path, "nolead")
    rename_lead(rec, "V6", "X")
    with pytest.raises(RecordError) as err:
        read_wfdb(rec, 500, 5000)
    assert err.value.field == "leads" and "V6" in err.value.reason
    assert "missing lead" in str(err.value)


def test_unknown_units(shared_data: Path, tmp_path: Path) -> None:
    rec = copy_record(RECORDS500 / "00001_hr", tmp_path, "nu")
    hea = rec.with_suffix(".hea")
    hea.write_text(hea.read_text().replace("1000.0(0)/mV", "1000.0(0)/NU"))
    with pytest.raises(RecordError, match="units: lead I has unit 'NU'"):
        read_wfdb(rec, 500, 5000)


def test_record_error_is_value_error_and_pickles() -> None:
    err = RecordError("rec7", "signal", "boom")
    assert isinstance(err, ValueError)
    assert str(err) == "record rec7: signal: boom"
    back = pickle.loads(pickle.dumps(err))
    assert (back.record, back.field, back.reason) == ("rec7", "signal", "boom")
