"""Every reader on the real files in ../shared/data, and the odd records' typed outcomes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import wfdb

from ecglm.config.schema import NormalizeConfig
from ecglm.data import LEADS, RecordError, find_records, read_raw, read_record
from ecglm.data.normalize import canonical_lead
from ecglm.data.readers.ludb import read_wave_annotations
from ecglm.data.readers.wfdb_format import read_wfdb_raw
from tests.helpers import CINC, LUDB, ODD, RECORDS500, write_mimic_fixture

DEFAULT = NormalizeConfig()


def _wfdb_canonical(path: Path) -> np.ndarray:
    """Reference: wfdb.rdsamp columns reordered by (case-insensitive) name, (12, T) mV."""
    x, fields = wfdb.rdsamp(str(path))
    names = [n.lower() for n in fields["sig_name"]]
    return np.stack([x[:, names.index(lead.lower())] for lead in LEADS])


@pytest.mark.parametrize("path", [RECORDS500 / "00007_hr", CINC / "E07500", CINC / "HR06003",
                                  CINC / "JS20011", ODD / "s0010_re", LUDB / "data" / "17",
                                  ODD / "100", ODD / "test01_00s", ODD / "S0001"],
                         ids=lambda p: p.name)
def test_fast_wfdb_path_equals_wfdb(shared_data: Path, path: Path) -> None:
    """Our header parser + numpy reader gives wfdb's exact physical values, names, fs."""
    rec = wfdb.rdrecord(str(path))
    raw = read_wfdb_raw(path)
    assert raw.lead_names == list(rec.sig_name) and raw.fs == rec.fs
    assert raw.metadata["comments"] == rec.comments
    np.testing.assert_array_equal(raw.signal, rec.p_signal.T)  # all in mV already


def test_cinc2021_header_plus_mat(shared_data: Path) -> None:
    raw = read_raw(CINC / "E07500")
    assert raw.metadata["age"] == 78 and raw.metadata["sex"] == "M"
    assert raw.metadata["dx"] == ["67741000119109", "426177001"]
    # the .mat holds int16 'val' (12 x 5000); physical = (val - baseline) / gain, gain 1000/mV
    val = scipy.io.loadmat(str(CINC / "E07500.mat"))["val"].astype(np.float64)
    np.testing.assert_allclose(raw.signal, val / 1000.0)
    rec = read_record(CINC / "HR06000", DEFAULT, 500, 5000)  # units written as "mv"
    np.testing.assert_allclose(rec.signal, _wfdb_canonical(CINC / "HR06000"), atol=1e-6)
    assert rec.lead_mask.all() and rec.flags == []
    flat = read_record(CINC / "JS20004", DEFAULT, 500, 5000)  # three all-zero leads: flagged
    assert flat.flags == ["flat leads: V2, V4, V6"]


def test_cpsc2018_struct(shared_data: Path) -> None:
    raw = read_raw(ODD / "A1980.mat")
    assert raw.fs == 500 and raw.lead_names == list(LEADS)
    assert raw.metadata["age"] == 52 and raw.metadata["sex"] == "M"
    data = scipy.io.loadmat(str(ODD / "A1980.mat"))["ECG"]["data"][0, 0]
    np.testing.assert_array_equal(raw.signal, data)
    rec = read_record(ODD / "A1981", DEFAULT, 250, 2500)  # no extension, 15.9 s at 500 Hz
    assert rec.signal.shape == (12, 2500) and rec.metadata["source_seconds"] == 15.9
    assert rec.metadata["sex"] == "F" and rec.metadata["age"] == 48


def test_ludb_annotations(shared_data: Path) -> None:
    path = LUDB / "data" / "1"
    waves = read_wave_annotations(path)
    assert list(waves) == list(LEADS)
    ann = wfdb.rdann(str(path), "ii")
    lead_ii = waves["II"]
    assert [w.kind for w in lead_ii] == [{"p": "P", "N": "QRS", "t": "T"}[s]
                                         for s in ann.symbol if s not in "()"]
    first = lead_ii[0]  # '(' 644, 'N' 662, ')' 682
    assert (first.kind, first.onset, first.peak, first.offset) == ("QRS", 644, 662, 682)
    assert all(w.onset is None or w.onset <= w.peak for w in lead_ii)
    rec = read_record(path, DEFAULT, 500, 5000)  # lower-case lead names
    np.testing.assert_allclose(rec.signal, _wfdb_canonical(path), atol=1e-6)
    assert rec.patient_id == "1" and rec.metadata["format"] == "ludb"
    assert rec.metadata["diagnoses"][0] == "Rhythm: Sinus bradycardia"
    assert len(rec.metadata["waves"]["V6"]) == len(waves["V6"])


def test_mimic_layout(shared_data: Path, tmp_path: Path) -> None:
    recs = write_mimic_fixture(tmp_path, [RECORDS500 / "00001_hr", RECORDS500 / "00002_hr"])
    path = tmp_path / recs[0]["path"]
    rec = read_record(path, DEFAULT, 500, 5000)
    assert rec.patient_id == str(recs[0]["subject_id"])
    assert rec.metadata["study_id"] == recs[0]["study_id"]
    # aVF/aVL stored in MIMIC order come back in canonical order; 200 adu/mV quantisation
    ref, _ = wfdb.rdsamp(str(RECORDS500 / "00001_hr"))
    np.testing.assert_allclose(rec.signal, ref.T, atol=0.0025 + 1e-6)
    assert find_records([tmp_path]) == sorted(str(tmp_path / r["path"]) for r in recs)


def test_odd_records_outcomes(shared_data: Path) -> None:
    # 15 leads at 1000 Hz: Frank vx/vy/vz dropped, 12 leads resampled to 500 Hz
    rec = read_record(ODD / "s0010_re", DEFAULT, 500, 5000)
    assert rec.metadata["dropped_leads"] == ["vx", "vy", "vz"] and rec.lead_mask.all()
    ref = _wfdb_canonical(ODD / "s0010_re")[:, :10000:2]
    for k in range(12):
        assert np.corrcoef(rec.signal[k], ref[k])[0, 1] > 0.99, LEADS[k]
    # S0001: same ECG, header gain 2000000/mV -> amplitudes ~1000x too small
    with pytest.raises(RecordError) as err:
        read_record(ODD / "S0001", DEFAULT, 500, 5000)
    assert err.value.field == "amplitude" and "peak-to-peak" in err.value.reason
    assert err.value.record == str(ODD / "S0001")
    flagged = read_record(ODD / "S0001", NormalizeConfig(amplitude_policy="flag"), 500, 5000)
    assert flagged.flags and flagged.flags[0].startswith("amplitude: implausible")
    ratio = rec.signal.std() / flagged.signal.std()
    assert 500 < ratio < 5000
    assert np.corrcoef(rec.signal[1], flagged.signal[1])[0, 1] > 0.999
    # 4 unnamed channels: nothing to match, whatever the policy
    for policy in (DEFAULT, NormalizeConfig(missing_leads="mask")):
        with pytest.raises(RecordError) as err:
            read_record(ODD / "test01_00s", policy, 500, 5000)
        assert err.value.field == "leads" and "unrecognised channel name(s)" in err.value.reason
        assert "ECG 1" in err.value.reason
    # MIT-BIH 100: MLII + V5 at 360 Hz: an error by default, V5 alone when masking is allowed
    with pytest.raises(RecordError, match="missing lead"):
        read_record(ODD / "100", DEFAULT, 500, 5000)
    masked = read_record(ODD / "100", NormalizeConfig(missing_leads="mask"), 500, 5000)
    assert masked.lead_mask.tolist() == [lead == "V5" for lead in LEADS]
    assert masked.metadata["dropped_leads"] == ["MLII"] and masked.metadata["source_fs"] == 360
    v5 = wfdb.rdrecord(str(ODD / "100"), channels=[1], sampto=3600).p_signal[:, 0]
    up = masked.signal[LEADS.index("V5")]
    assert np.corrcoef(up[:5000:25], np.interp(np.arange(0, 5000, 25) * 0.72,
                                                np.arange(3600), v5))[0, 1] > 0.95
    assert not masked.signal[0].any()
    with pytest.raises(RecordError, match="min_leads"):
        read_record(ODD / "100", NormalizeConfig(missing_leads="mask", min_leads=2), 500, 5000)


def test_lead_name_matching() -> None:
    assert [canonical_lead(n) for n in ("AVR", "avr", "aVR", "Lead aVR", "a_VR")] == ["aVR"] * 5
    assert [canonical_lead(n) for n in ("DII", "ii", "V6", "v6 ")] == ["II", "II", "V6", "V6"]
    assert [canonical_lead(n) for n in ("MLII", "vx", "ECG 1", "V7", "")] == [None] * 5


def test_find_records(shared_data: Path) -> None:
    odd = find_records([ODD])
    assert [Path(r).name for r in odd] == ["100", "A1980.mat", "A1981.mat", "S0001",
                                           "s0010_re", "test01_00s"]
    cinc = find_records([CINC, CINC / "E07500.hea", str(CINC / "E07501")])
    assert len(cinc) == 50  # duplicates collapse; dx_mapping CSV is not a record
    assert find_records(["nothere"]) == ["nothere"]
