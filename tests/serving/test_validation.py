"""Request validation: every 4xx case names its field; ECGs are resampled like training data."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from ecglm.config.schema import DataConfig, ServeConfig
from ecglm.data.records import LEADS
from ecglm.serving.validation import RequestError, error_body, parse_request
from ecglm.tasks.qa import MAX_OPTIONS, YES_NO_OPTIONS, is_yes_no_question

SERVE = ServeConfig(max_body_bytes=2_000_000)
DATA = DataConfig(fs=500, seconds=10.0)
_DROP = object()
"""Field value meaning "leave the field out of the request"."""


def _ecg(fs: float = 500.0, seconds: float = 10.0) -> list[list[float]]:
    """12 leads of a 1.2 Hz sine (mV) with a per-lead offset, sampled at ``fs`` Hz."""
    t = np.arange(int(round(fs * seconds))) / fs
    return [np.round(0.5 * np.sin(2 * np.pi * 1.2 * t) + 0.01 * i, 5).tolist() for i in range(12)]


def _request(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ecg": _ecg(), "fs": 500, "question": "Which leads show noise?",
                            "options": ["I", "V1", "none"]}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not _DROP}


def _parse(body: Any, *, raw: bytes | None = None, content_length: str | None = None,
           serve: ServeConfig = SERVE):
    data = raw if raw is not None else json.dumps(body).encode()
    return parse_request(data, content_length, serve, DATA)


def _error(body: Any = None, **kwargs: Any) -> RequestError:
    with pytest.raises(RequestError) as exc:
        _parse(body, **kwargs)
    return exc.value


def test_valid_request_is_converted_for_the_model() -> None:
    req = _parse(_request())
    assert req.signal.shape == (12, DATA.n_samples) and req.signal.dtype == np.float32
    np.testing.assert_allclose(req.signal, np.asarray(_ecg(), dtype=np.float32))
    assert req.row.question == "Which leads show noise?"
    assert req.row.options == ("I", "V1", "none")
    assert (req.input_fs, req.input_samples) == (500.0, 5000)


def test_250_hz_is_resampled_to_the_target_rate() -> None:
    req = _parse(_request(ecg=_ecg(fs=250.0), fs=250))
    assert req.signal.shape == (12, 5000)
    t = np.arange(5000) / 500.0
    expected = 0.5 * np.sin(2 * np.pi * 1.2 * t) + 0.01 * np.arange(12)[:, None]
    # polyphase filter edge effects only at the ends
    np.testing.assert_allclose(req.signal[:, 100:-100], expected[:, 100:-100], atol=2e-3)
    assert req.input_fs == 250.0 and req.input_samples == 2500


def test_short_records_are_zero_padded_and_long_ones_cropped() -> None:
    short = _parse(_request(ecg=_ecg(fs=250.0, seconds=4.0), fs=250)).signal
    assert short.shape == (12, 5000)
    assert np.abs(short[:, 1900:1990]).max() > 0.1
    assert not short[:, 2000:].any()
    roomy = ServeConfig(max_body_bytes=10_000_000)
    long = _parse(_request(ecg=_ecg(fs=1000.0, seconds=20.0), fs=1000), serve=roomy).signal
    assert long.shape == (12, 5000)
    t = np.arange(5000) / 500.0
    np.testing.assert_allclose(long[0, 100:4900], 0.5 * np.sin(2 * np.pi * 1.2 * t)[100:4900],
                               atol=2e-3)


@pytest.mark.parametrize("n_leads", [0, 1, 11, 13])
def test_wrong_number_of_leads(n_leads: int) -> None:
    err = _error(_request(ecg=_ecg()[:n_leads] if n_leads <= 12 else _ecg() + [_ecg()[0]]))
    assert (err.status, err.field) == (422, "ecg")
    assert f"expected 12 leads, got {n_leads}" in err.message
    assert error_body(err) == {"error": err.message, "field": "ecg"}


def test_unequal_lead_lengths_name_the_lead() -> None:
    ecg = _ecg()
    ecg[LEADS.index("aVL")] = ecg[LEADS.index("aVL")][:-1]
    err = _error(_request(ecg=ecg))
    assert (err.status, err.field) == (422, "ecg")
    assert "lead aVL has 4999 samples" in err.message


@pytest.mark.parametrize("bad", ["0.1", None, True, [0.1], {"v": 1}])
def test_non_numbers_are_rejected(bad: Any) -> None:
    ecg = _ecg()
    ecg[LEADS.index("V5")][7] = bad
    err = _error(_request(ecg=ecg))
    assert (err.status, err.field) == (422, "ecg")
    assert "lead V5[7]" in err.message


def test_a_lead_that_is_not_a_list() -> None:
    ecg: list[Any] = _ecg()
    ecg[2] = 1.0
    err = _error(_request(ecg=ecg))
    assert (err.status, err.field) == (422, "ecg") and "lead III" in err.message


@pytest.mark.parametrize("value, name", [(float("nan"), "NaN"), (float("inf"), "Infinity"),
                                         (float("-inf"), "-Infinity")])
def test_non_finite_values_name_the_leads(value: float, name: str) -> None:
    ecg = _ecg()
    ecg[LEADS.index("II")][3] = value
    ecg[LEADS.index("V6")][9] = value
    raw = json.dumps(_request(ecg=ecg)).encode()
    assert name.encode() in raw  # what a client's JSON encoder writes
    err = _error(raw=raw)
    assert (err.status, err.field) == (422, "ecg")
    assert "lead(s) II, V6" in err.message


@pytest.mark.parametrize("fs", [10, 49.9, 2000.5, 1e6, "500", None, True, float("nan")])
def test_fs_out_of_range_or_not_a_number(fs: Any) -> None:
    err = _error(_request(fs=fs))
    assert (err.status, err.field) == (422, "fs")


@pytest.mark.parametrize("seconds", [1.0, 61.0])
def test_duration_limits(seconds: float) -> None:
    err = _error(_request(ecg=_ecg(fs=100.0, seconds=seconds), fs=100))
    assert (err.status, err.field) == (422, "ecg")
    assert "duration" in err.message and "[2, 60] s" in err.message


@pytest.mark.parametrize("question", ["", "   ", 5, None])
def test_question_must_be_a_non_empty_string(question: Any) -> None:
    err = _error(_request(question=question))
    assert (err.status, err.field) == (422, "question")


def test_question_length_limit() -> None:
    err = _error(_request(question="x" * (SERVE.max_question_chars + 1)))
    assert (err.status, err.field) == (422, "question") and "at most 500" in err.message
    _parse(_request(question="x" * SERVE.max_question_chars))


@pytest.mark.parametrize("options", [[], ["a"] * 2, ["a", 3], ["a", " "], "yes",
                                     [f"o{i}" for i in range(MAX_OPTIONS + 1)]])
def test_bad_options(options: Any) -> None:
    err = _error(_request(options=options))
    assert (err.status, err.field) == (422, "options")


def test_sixty_four_options_are_accepted() -> None:
    opts = [f"o{i}" for i in range(MAX_OPTIONS)]
    assert list(_parse(_request(options=opts)).row.options) == opts


@pytest.mark.parametrize("question", ["Does this ECG show sinus rhythm?", "is it noisy",
                                      "ARE there pvcs?", "Do the leads look fine?",
                                      "Was the axis normal?", "Were beats dropped?"])
def test_yes_no_questions_default_their_options(question: str) -> None:
    assert is_yes_no_question(question)
    req = _parse(_request(question=question, options=_DROP))
    assert req.row.options == YES_NO_OPTIONS


@pytest.mark.parametrize("question", ["Which leads show noise?", "What is the rhythm?",
                                      "Doesn't matter?", "Island?"])
def test_other_questions_need_options(question: str) -> None:
    assert not is_yes_no_question(question)
    err = _error(_request(question=question, options=_DROP))
    assert (err.status, err.field) == (422, "options")
    assert "options" in err.message and "yes/no" in err.message


def test_missing_and_unknown_fields() -> None:
    for key in ("ecg", "fs", "question"):
        err = _error(_request(**{key: _DROP}))
        assert (err.status, err.field) == (422, key) and "missing" in err.message
    err = _error(_request(option=["yes"]))
    assert (err.status, err.field) == (422, "option") and "unknown field" in err.message


@pytest.mark.parametrize("raw", [b"", b"{not json", b"\xff\xfe{}", b"[1, 2", b"{'a': 1}"])
def test_malformed_json_is_400(raw: bytes) -> None:
    err = _error(raw=raw)
    assert (err.status, err.field) == (400, "body")


@pytest.mark.parametrize("raw", [b"[]", b"42", b'"ecg"', b"null"])
def test_json_that_is_not_an_object_is_422(raw: bytes) -> None:
    err = _error(raw=raw)
    assert (err.status, err.field) == (422, "body")


def test_body_size_is_checked_before_parsing() -> None:
    small = ServeConfig(max_body_bytes=1000)
    # declared too large: refused without looking at the (here malformed) bytes
    err = _error(raw=b"{", content_length="1001", serve=small)
    assert (err.status, err.field) == (413, "body") and "1000 bytes" in err.message
    # no header but too many bytes
    err = _error(raw=b" " * 1001, serve=small)
    assert err.status == 413
    # bad headers
    assert _error(raw=b"{}", content_length="ten", serve=small).status == 400
    assert _error(raw=b"{}", content_length="-1", serve=small).status == 400
    # exactly at the limit: the size passes, then JSON parsing decides
    assert _error(raw=b"{" + b" " * 999, content_length="1000", serve=small).status == 400


def test_generation_endpoint_takes_only_ecg_and_fs() -> None:
    from ecglm.serving.validation import validate_request

    body = _request()
    req = validate_request({"ecg": body["ecg"], "fs": body["fs"]}, SERVE, DATA, "report")
    assert not hasattr(req.row, "question") and req.signal.shape == (12, DATA.n_samples)
    with pytest.raises(RequestError) as exc:
        validate_request(body, SERVE, DATA, "report")
    assert exc.value.status == 422 and exc.value.field in ("options", "question")
    with pytest.raises(RequestError) as exc:
        validate_request({"ecg": body["ecg"]}, SERVE, DATA, "grounding")
    assert exc.value.field == "fs"
