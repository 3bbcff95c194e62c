"""The pyfunc's input side without a model: DataFrame rows -> validated requests (the HTTP
endpoint's checks and ECG preprocessing), its signature and input example."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ecglm.config import ExperimentConfig, apply_overrides
from ecglm.serving.pyfunc import (PyfuncInputError, input_example, pip_requirements,
                                  requests_from_frame, signature)
from ecglm.serving.validation import to_model_signal


@pytest.fixture()
def cfg() -> ExperimentConfig:
    return apply_overrides(ExperimentConfig(), {"data.fs": 100, "data.seconds": 10.0})


def _ecg(seconds: float = 10.0, fs: int = 100) -> np.ndarray:
    t = np.arange(int(seconds * fs)) / fs
    return np.stack([np.sin(2 * np.pi * (k + 1) * t) * 0.5 for k in range(12)])


def test_rows_become_the_endpoint_requests(cfg: ExperimentConfig) -> None:
    ecg = _ecg(fs=250)
    frame = pd.DataFrame([
        {"ecg": ecg, "fs": 250.0, "question": "Which leads show ST elevation?",
         "options": ["I", "II", "none"]},
        {"ecg": [list(lead) for lead in ecg.astype(np.float32)], "fs": 250.0,
         "question": "Does this ECG show sinus rhythm?", "options": None},
    ])
    first, second = requests_from_frame(frame, cfg)
    # resampled to data.fs and cropped/padded to data.n_samples, as the server does it
    assert first.signal.shape == (12, cfg.data.n_samples)
    np.testing.assert_allclose(first.signal, to_model_signal(ecg, 250.0, cfg.data), atol=1e-6)
    assert first.input_fs == 250.0 and first.input_samples == ecg.shape[1]
    assert first.row.options == ("I", "II", "none")
    assert second.row.options == ("yes", "no", "not sure")  # yes/no default options


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(ecg=_ecg()[:11]), r"row 1: ecg: expected 12 leads, got 11"),
    (lambda r: r.update(fs=5000.0), r"row 1: fs: 5000 Hz outside the accepted range"),
    (lambda r: r.update(question=""), r"row 1: question: "),
    (lambda r: r.update(ecg=np.where(np.arange(1000) == 3, np.nan, _ecg())),
     r"row 1: ecg: non-finite values"),
    (lambda r: r.update(options=None, question="Which leads show ST elevation?"),
     r"row 1: options: "),
])
def test_invalid_rows_name_row_and_field(cfg: ExperimentConfig, change, message: str) -> None:
    good = {"ecg": _ecg(), "fs": 100.0, "question": "Does this ECG show sinus rhythm?",
            "options": ["yes", "no"]}
    bad = dict(good)
    change(bad)
    with pytest.raises(PyfuncInputError, match=message):
        requests_from_frame(pd.DataFrame([good, bad]), cfg)


def test_unknown_columns_and_non_frames(cfg: ExperimentConfig) -> None:
    with pytest.raises(PyfuncInputError, match=r"unknown column\(s\) \['report'\] for a 'qa' "
                                               r"model; allowed: \['ecg', 'fs', 'options', "
                                               r"'question'\]"):
        requests_from_frame(pd.DataFrame([{"ecg": _ecg(), "fs": 100.0, "report": "x"}]), cfg)
    with pytest.raises(PyfuncInputError, match="expected a pandas DataFrame"):
        requests_from_frame({"ecg": _ecg()}, cfg)  # type: ignore[arg-type]


def test_signature_and_example(cfg: ExperimentConfig) -> None:
    sig = signature(cfg)
    inputs = {c.name: c for c in sig.inputs.inputs}
    assert set(inputs) == {"ecg", "fs", "question", "options"}
    assert not inputs["options"].required and inputs["ecg"].required
    example = input_example(cfg)
    assert requests_from_frame(example, cfg)[0].signal.shape == (12, cfg.data.n_samples)
    report = signature(apply_overrides(cfg, {"task": "report"}))
    assert {c.name for c in report.inputs.inputs} == {"ecg", "fs"}
    reqs = pip_requirements()
    assert reqs[0].startswith("ecglm==") and any(r.startswith("torch==") for r in reqs)
