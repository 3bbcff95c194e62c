"""Upload formats: a WFDB record and raw samples give exactly the ECGRequest of the same ECG
sent as JSON lists; every bad upload is a RequestError naming its field."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs

import numpy as np
import pytest
import wfdb

from ecglm.config.schema import DataConfig, ServeConfig
from ecglm.data.canonical import LEADS
from ecglm.data.readers import read_record
from ecglm.serving.inputs import (
    RAW_FIELDS,
    WFDB_FIELDS,
    signal_from_raw,
    signal_from_wfdb,
    task_fields_from_query,
)
from ecglm.serving.validation import (
    ECGRequest,
    RequestError,
    validate_request,
    validate_signal_request,
)
from ecglm.tasks import get_task

SERVE = ServeConfig(max_body_bytes=4_000_000)
DATA = DataConfig(fs=500, seconds=10.0)
MAX = SERVE.max_body_bytes
QA = {"question": "Which leads show noise?", "options": ["I", "V1", "none"]}
GAIN = 1000.0
"""ADC units per mV of the records written here (PTB-XL's gain): quantisation 1 uV."""


def _ecg(fs: float = 500.0, seconds: float = 10.0) -> np.ndarray:
    """``(12, T)`` float64 mV: a 1.2 Hz sine plus a per-lead offset and a 7 Hz ripple."""
    t = np.arange(int(round(fs * seconds))) / fs
    lead = np.arange(12)[:, None]
    return (0.5 * np.sin(2 * np.pi * 1.2 * t) + 0.1 * np.sin(2 * np.pi * 7 * t + lead)
            + 0.01 * lead)


def _wfdb_files(folder: Path, signal: np.ndarray, fs: float, names: list[str],
                record: str = "rec", units: str = "mV",
                gain: float = GAIN, fmt: str = "16") -> dict[str, bytes]:
    """Write ``signal`` ``(n, T)`` in ``units`` as a WFDB record of format ``fmt`` (``gain``
    ADC units per unit) and read its files back."""
    n = signal.shape[0]
    wfdb.wrsamp(record, fs=fs, units=[units] * n, sig_name=names, p_signal=signal.T,
                fmt=[fmt] * n, adc_gain=[gain] * n, baseline=[0] * n, write_dir=str(folder))
    return {p.name: p.read_bytes() for p in sorted(folder.glob(f"{record}.*"))}


def _json_request(x: np.ndarray, fs: float, fields: dict[str, Any] = QA,
                  task: str = "qa") -> ECGRequest:
    return validate_request({"ecg": x.tolist(), "fs": fs, **fields}, SERVE, DATA, task)


def _same(a: ECGRequest, b: ECGRequest) -> None:
    np.testing.assert_array_equal(a.signal, b.signal)
    assert a.signal.dtype == b.signal.dtype == np.float32
    assert (a.row, a.input_fs, a.input_samples) == (b.row, b.input_fs, b.input_samples)


def _err(fn: Any, *args: Any, **kwargs: Any) -> RequestError:
    with pytest.raises(RequestError) as exc:
        fn(*args, **kwargs)
    return exc.value


# ------------------------------------------------------------------------------------------------
# WFDB
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fs", [500.0, 250.0])
def test_wfdb_upload_equals_the_json_path(tmp_path: Path, fs: float) -> None:
    sig = _ecg(fs)
    files = _wfdb_files(tmp_path, sig, fs, list(LEADS))
    assert sorted(files) == ["rec.dat", "rec.hea"]
    x, got_fs = signal_from_wfdb(files, MAX)
    assert x.shape == sig.shape and x.dtype == np.float64 and got_fs == fs
    np.testing.assert_allclose(x, sig, rtol=0, atol=0.5 / GAIN + 1e-12)
    upload = validate_signal_request(x, got_fs, QA, SERVE, DATA, "qa", names=WFDB_FIELDS)
    _same(upload, _json_request(x, got_fs))
    assert upload.signal.shape == (12, DATA.n_samples)


def test_wfdb_format_212(tmp_path: Path) -> None:
    sig = _ecg()  # within the 12-bit range at 1000 units per mV (+-2.047 mV)
    x, fs = signal_from_wfdb(_wfdb_files(tmp_path, sig, 500.0, list(LEADS), fmt="212"), MAX)
    np.testing.assert_allclose(x, sig, rtol=0, atol=0.5 / GAIN + 1e-12)
    _same(validate_signal_request(x, fs, QA, SERVE, DATA, "qa", names=WFDB_FIELDS),
          _json_request(x, fs))


def test_wfdb_leads_in_another_order_and_case(tmp_path: Path) -> None:
    sig = _ecg()
    names = ["v6", "V5", "V4", "V3", "V2", "V1", "AVF", "avl", "AVR", "III", "DII", "i", "vx"]
    order = [LEADS.index(n) for n in ("V6", "V5", "V4", "V3", "V2", "V1", "aVF", "aVL", "aVR",
                                      "III", "II", "I")]
    stored = np.vstack([sig[order], np.full((1, sig.shape[1]), 0.3)])  # + an extra channel
    x, fs = signal_from_wfdb(_wfdb_files(tmp_path, stored, 500.0, names), MAX)
    assert x.shape == (12, sig.shape[1]) and fs == 500.0
    np.testing.assert_allclose(x, sig, rtol=0, atol=0.5 / GAIN + 1e-12)


def test_wfdb_microvolt_units_are_converted(tmp_path: Path) -> None:
    sig = _ecg()
    x, _ = signal_from_wfdb(_wfdb_files(tmp_path, sig * 1000.0, 500.0, list(LEADS),
                                        units="uV", gain=1.0), MAX)
    np.testing.assert_allclose(x, sig, rtol=0, atol=0.5e-3 + 1e-12)  # 1 uV steps


def test_ptbxl_record_upload(shared_data: Path) -> None:
    base = shared_data / "ptbxl" / "records500" / "00000" / "00001_hr"
    if not base.with_suffix(".hea").exists():
        pytest.skip(f"PTB-XL record {base} not found")
    files = {p.name: p.read_bytes() for p in (base.with_suffix(".hea"), base.with_suffix(".dat"))}
    x, fs = signal_from_wfdb(files, MAX)
    assert x.shape == (12, 5000) and fs == 500.0
    upload = validate_signal_request(x, fs, QA, SERVE, DATA, "qa", names=WFDB_FIELDS)
    _same(upload, _json_request(x, fs))
    # the served ECG is the shard builder's record of the same file
    record = read_record(base, DATA.normalize, DATA.fs, DATA.n_samples)
    np.testing.assert_array_equal(upload.signal, record.signal)


def test_temporary_folder_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    files = _wfdb_files(tmp_path, _ecg(), 500.0, list(LEADS))
    signal_from_wfdb(files, MAX)
    assert list(scratch.iterdir()) == []
    err = _err(signal_from_wfdb, {**files, "rec.dat": files["rec.dat"][:1000]}, MAX)
    assert (err.status, err.field) == (400, "dat")
    assert "ecglm-upload-" not in err.message and str(scratch) not in err.message
    assert list(scratch.iterdir()) == []


def _replace_header(files: dict[str, bytes], old: str, new: str) -> dict[str, bytes]:
    text = files["rec.hea"].decode()
    assert old in text
    return {**files, "rec.hea": text.replace(old, new).encode()}


def _wfdb_cases(files: dict[str, bytes]) -> list[tuple[str, dict[str, bytes], int, str]]:
    hea, dat = files["rec.hea"], files["rec.dat"]
    first = hea.decode().splitlines()[0]
    return [
        ("no header", {"rec.dat": dat}, 422, "hea"),
        ("two headers", {**files, "other.hea": hea}, 422, "hea"),
        ("missing .dat", {"rec.hea": hea}, 422, "dat"),
        ("renamed .dat", {"rec.hea": hea, "other.dat": dat}, 422, "dat"),
        ("extra file", {**files, "notes.txt": b"x"}, 422, "dat"),
        ("traversal", {"rec.hea": hea, "../rec.dat": dat}, 422, "dat"),
        ("absolute", {"rec.hea": hea, "/tmp/rec.dat": dat}, 422, "dat"),
        ("folder", {"rec.hea": hea, "sub/rec.dat": dat}, 422, "dat"),
        ("backslash", {"rec.hea": hea, "..\\rec.dat": dat}, 422, "dat"),
        ("header traversal", {"../rec.hea": hea, "rec.dat": dat}, 422, "hea"),
        ("header names ../", _replace_header(files, "rec.dat", "../rec.dat"), 400, "hea"),
        ("header names dotdot", _replace_header(files, "rec.dat", "..rec.dat"), 400, "hea"),
        ("truncated .dat", {**files, "rec.dat": dat[: len(dat) // 2]}, 400, "dat"),
        ("empty .dat", {**files, "rec.dat": b""}, 400, "dat"),
        ("empty header", {**files, "rec.hea": b""}, 400, "hea"),
        ("garbage header", {**files, "rec.hea": b"hello world\n"}, 400, "hea"),
        ("binary header", {**files, "rec.hea": bytes(range(256))}, 400, "hea"),
        ("bad signal line", _replace_header(files, "1000", "e"), 400, "hea"),
        ("signal-count mismatch", _replace_header(files, first, first.replace(" 12 ", " 13 ")),
         400, "hea"),
        ("zero samples", _replace_header(files, first, "rec 12 500 0"), 422, "hea"),
        ("implausible fs", _replace_header(files, first, "rec 12 5 5000"), 422, "hea"),
        ("multi-segment", _replace_header(files, first, "rec/2 12 500 5000"), 422, "hea"),
        ("units", _replace_header(files, "/mV", "/degC"), 422, "hea"),
        ("sizes", _replace_header(files, first, "rec 12 500 6000"), 400, "dat"),
    ]


def test_wfdb_errors_name_the_file(tmp_path: Path) -> None:
    files = _wfdb_files(tmp_path, _ecg(), 500.0, list(LEADS))
    for name, upload, status, field in _wfdb_cases(files):
        err = _err(signal_from_wfdb, upload, MAX)
        assert (err.status, err.field) == (status, field), (name, err)


def test_wfdb_missing_leads_are_named(tmp_path: Path) -> None:
    keep = [i for i, lead in enumerate(LEADS) if lead not in ("aVL", "V3")]
    files = _wfdb_files(tmp_path, _ecg()[keep], 500.0, [LEADS[i] for i in keep])
    err = _err(signal_from_wfdb, files, MAX)
    assert (err.status, err.field) == (422, "hea") and "aVL, V3" in err.message


def test_wfdb_upload_over_the_size_limit(tmp_path: Path) -> None:
    files = _wfdb_files(tmp_path, _ecg(), 500.0, list(LEADS))
    err = _err(signal_from_wfdb, files, 1000)
    assert (err.status, err.field) == (413, "body")


def test_wfdb_invalid_samples_and_limits_name_wfdb_fields(tmp_path: Path) -> None:
    sig = _ecg()
    sig[LEADS.index("V2"), 10:20] = np.nan  # written as the format-16 invalid value -32768
    x, fs = signal_from_wfdb(_wfdb_files(tmp_path, sig, 500.0, list(LEADS)), MAX)
    err = _err(validate_signal_request, x, fs, QA, SERVE, DATA, "qa", names=WFDB_FIELDS)
    assert (err.status, err.field) == (422, "dat") and "lead(s) V2" in err.message
    slow = tmp_path / "slow"
    slow.mkdir()
    x, fs = signal_from_wfdb(_wfdb_files(slow, _ecg(20.0), 20.0, list(LEADS)), MAX)
    err = _err(validate_signal_request, x, fs, QA, SERVE, DATA, "qa", names=WFDB_FIELDS)
    assert (err.status, err.field) == (422, "hea") and "20 Hz" in err.message
    short = tmp_path / "short"
    short.mkdir()
    x, fs = signal_from_wfdb(_wfdb_files(short, _ecg(seconds=1.0), 500.0, list(LEADS)), MAX)
    err = _err(validate_signal_request, x, fs, QA, SERVE, DATA, "qa", names=WFDB_FIELDS)
    assert (err.status, err.field) == (422, "hea") and "duration" in err.message


# ------------------------------------------------------------------------------------------------
# raw samples
# ------------------------------------------------------------------------------------------------

def _raw_headers(dtype: str, samples: int = 5000, fs: str = "500",
                 units: Optional[str] = None) -> dict[str, str]:
    headers = {"x-ecg-dtype": dtype, "X-ECG-SHAPE": f"12,{samples}", "X-Ecg-Fs": fs}
    if units is not None:
        headers["X-ECG-Units-Per-MV"] = units
    return headers


def test_raw_int16_microvolts_equal_the_json_path() -> None:
    stored = np.round(_ecg() * 1000.0).astype("<i2")
    x, fs = signal_from_raw(stored.tobytes(), _raw_headers("int16"))
    assert x.dtype == np.float64 and fs == 500.0
    np.testing.assert_array_equal(x, stored.astype(np.float64) / 1000.0)
    upload = validate_signal_request(x, fs, QA, SERVE, DATA, "qa", names=RAW_FIELDS)
    _same(upload, _json_request(stored / 1000.0, 500))


def test_raw_float32_millivolts_equal_the_json_path() -> None:
    stored = _ecg(250.0).astype("<f4")
    x, fs = signal_from_raw(stored.tobytes(), _raw_headers("float32", 2500, "250"))
    np.testing.assert_array_equal(x, stored.astype(np.float64))
    upload = validate_signal_request(x, fs, QA, SERVE, DATA, "qa", names=RAW_FIELDS)
    _same(upload, _json_request(stored.astype(np.float64), 250))


def test_raw_units_per_mv() -> None:
    stored = np.round(_ecg() * 200.0).astype("<i2")
    x, _ = signal_from_raw(stored.tobytes(), _raw_headers("int16", units="200"))
    np.testing.assert_array_equal(x, stored / 200.0)
    f = (_ecg() * 1000.0).astype("<f4")
    x, _ = signal_from_raw(f.tobytes(), _raw_headers("float32", units="1000"))
    np.testing.assert_allclose(x, _ecg(), rtol=1e-6, atol=1e-6)


_RAW_BODY = np.zeros((12, 5000), dtype="<i2").tobytes()


@pytest.mark.parametrize("headers, body, field", [
    (_raw_headers("int16"), _RAW_BODY[:-2], "X-ECG-Shape"),
    (_raw_headers("int16"), _RAW_BODY + b"\0", "X-ECG-Shape"),
    (_raw_headers("float32"), _RAW_BODY, "X-ECG-Shape"),
    (_raw_headers("int32"), _RAW_BODY, "X-ECG-Dtype"),
    (_raw_headers(""), _RAW_BODY, "X-ECG-Dtype"),
    ({"X-ECG-Shape": "12,5000", "X-ECG-FS": "500"}, _RAW_BODY, "X-ECG-Dtype"),
    ({**_raw_headers("int16"), "X-ECG-Shape": "11,5000"}, _RAW_BODY[:11 * 10000], "X-ECG-Shape"),
    ({**_raw_headers("int16"), "X-ECG-Shape": "5000,12"}, _RAW_BODY, "X-ECG-Shape"),
    ({**_raw_headers("int16"), "X-ECG-Shape": "60000"}, _RAW_BODY, "X-ECG-Shape"),
    ({**_raw_headers("int16"), "X-ECG-Shape": "1,12,5000"}, _RAW_BODY, "X-ECG-Shape"),
    ({**_raw_headers("int16"), "X-ECG-Shape": "12,five"}, _RAW_BODY, "X-ECG-Shape"),
    ({**_raw_headers("int16"), "X-ECG-Shape": "12,\u00b2"}, _RAW_BODY, "X-ECG-Shape"),
    ({**_raw_headers("int16"), "X-ECG-Shape": "12,0"}, b"", "X-ECG-Shape"),
    ({"X-ECG-Dtype": "int16", "X-ECG-FS": "500"}, _RAW_BODY, "X-ECG-Shape"),
    (_raw_headers("int16", fs="fast"), _RAW_BODY, "X-ECG-FS"),
    (_raw_headers("int16", fs="0"), _RAW_BODY, "X-ECG-FS"),
    (_raw_headers("int16", fs="nan"), _RAW_BODY, "X-ECG-FS"),
    ({"X-ECG-Dtype": "int16", "X-ECG-Shape": "12,5000"}, _RAW_BODY, "X-ECG-FS"),
    (_raw_headers("int16", units="0"), _RAW_BODY, "X-ECG-Units-Per-MV"),
    (_raw_headers("int16", units="-1000"), _RAW_BODY, "X-ECG-Units-Per-MV"),
    (_raw_headers("int16", units="inf"), _RAW_BODY, "X-ECG-Units-Per-MV"),
    (_raw_headers("int16", units="uV"), _RAW_BODY, "X-ECG-Units-Per-MV"),
])
def test_raw_errors_name_the_header(headers: dict[str, str], body: bytes, field: str) -> None:
    err = _err(signal_from_raw, body, headers)
    assert (err.status, err.field) == (422, field), err


def test_raw_signal_errors_name_raw_fields() -> None:
    f = _ecg().astype("<f4")
    f[LEADS.index("III"), 5] = np.inf
    f[LEADS.index("V4"), 6] = np.nan
    x, fs = signal_from_raw(f.tobytes(), _raw_headers("float32"))
    err = _err(validate_signal_request, x, fs, QA, SERVE, DATA, "qa", names=RAW_FIELDS)
    assert (err.status, err.field) == (422, "body") and "lead(s) III, V4" in err.message
    body = np.zeros((12, 5000), "<i2").tobytes()
    x, fs = signal_from_raw(body, _raw_headers("int16", fs="10"))
    err = _err(validate_signal_request, x, fs, QA, SERVE, DATA, "qa", names=RAW_FIELDS)
    assert (err.status, err.field) == (422, "X-ECG-FS")
    x, fs = signal_from_raw(body[:12 * 200], _raw_headers("int16", samples=100))
    err = _err(validate_signal_request, x, fs, QA, SERVE, DATA, "qa", names=RAW_FIELDS)
    assert (err.status, err.field) == (422, "X-ECG-Shape") and "duration" in err.message


# ------------------------------------------------------------------------------------------------
# task fields from the query string
# ------------------------------------------------------------------------------------------------

QA_FIELDS = get_task("qa").request_fields


@pytest.mark.parametrize("query", ["question=Which+leads+show+noise%3F&options=I&options=V1"
                                   "&options=none",
                                   "question=Which+leads+show+noise%3F&options=%5B%22I%22%2C"
                                   "%22V1%22%2C%22none%22%5D"])
def test_query_fields_equal_the_json_fields(query: str) -> None:
    fields = task_fields_from_query(parse_qs(query), QA_FIELDS)
    assert fields == QA
    x = _ecg()
    _same(validate_signal_request(x, 500.0, fields, SERVE, DATA, "qa", names=RAW_FIELDS),
          _json_request(x, 500.0))


def test_query_from_a_multidict() -> None:
    datastructures = pytest.importorskip("starlette.datastructures")
    params = datastructures.QueryParams("question=Is+it+noisy%3F&options=yes&options=no")
    assert task_fields_from_query(params, QA_FIELDS) == {"question": "Is it noisy?",
                                                         "options": ["yes", "no"]}
    assert task_fields_from_query(datastructures.QueryParams(""), QA_FIELDS) == {}
    yes_no = task_fields_from_query(datastructures.QueryParams("question=Is+it+noisy"),
                                    QA_FIELDS)
    req = validate_signal_request(_ecg(), 500.0, yes_no, SERVE, DATA, "qa", names=RAW_FIELDS)
    assert req.row.options == ("yes", "no", "not sure")


@pytest.mark.parametrize("params, field", [
    ({"question": ["a?"], "option": ["yes"]}, "option"),
    ({"question": ["a?", "b?"]}, "question"),
    ({"question": ["a?"], "options": ["[\"yes\", "]}, "options"),
])
def test_query_errors(params: dict[str, list[str]], field: str) -> None:
    err = _err(task_fields_from_query, params, QA_FIELDS)
    assert (err.status, err.field) == (422, field)


def test_query_values_are_validated_by_the_task() -> None:
    fields = task_fields_from_query({"question": ["Which?"], "options": ["[1, 2]"]}, QA_FIELDS)
    err = _err(validate_signal_request, _ecg(), 500.0, fields, SERVE, DATA, "qa")
    assert (err.status, err.field) == (422, "options")
    err = _err(validate_signal_request, _ecg(), 500.0, {"question": "x", "prompt": "y"},
               SERVE, DATA, "qa")
    assert (err.status, err.field) == (422, "prompt") and "unknown field" in err.message
    err = _err(task_fields_from_query, {"question": ["x"]}, get_task("report").request_fields)
    assert (err.status, err.field) == (422, "question")
