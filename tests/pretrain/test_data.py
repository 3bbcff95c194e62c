"""Texts per record, prompts, missing-text counting and empty-split errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ecglm.pretrain.data import (FALLBACK_STATEMENTS, PretrainDataError, label_prompts,
                                 read_record_texts, record_text, statement_text)
from ecglm.pretrain.run import steps_per_epoch

ST = FALLBACK_STATEMENTS


def test_statement_text_orders_by_likelihood_and_skips_unknown() -> None:
    codes = json.dumps({"SR": 0.0, "NORM": 100.0, "XYZ": 100.0, "1AVB": 50.0})
    assert statement_text(codes, ST) == "normal ECG, first degree AV block, sinus rhythm"


def test_record_text_sources() -> None:
    codes = json.dumps({"NORM": 100.0, "SR": 0.0})
    report = "  sinusrhythmus   normales ekg "
    assert record_text(report, codes, ST, "report") == "sinusrhythmus normales ekg"
    assert record_text(report, codes, ST, "statements") == "normal ECG, sinus rhythm"
    assert record_text(report, codes, ST, "both") == ("normal ECG, sinus rhythm. "
                                                      "sinusrhythmus normales ekg")
    assert record_text("", "{}", ST, "both") == ""


def test_label_prompts() -> None:
    prompts = label_prompts("an ECG showing {label}", ST)
    assert prompts == ["an ECG showing normal ECG", "an ECG showing myocardial infarction",
                       "an ECG showing ST/T change", "an ECG showing conduction disturbance",
                       "an ECG showing hypertrophy"]


def _records(tmp_path: Path, rows: list[tuple[int, str, str, dict]]) -> Path:
    folder = tmp_path / "records"
    folder.mkdir()
    table = pa.table({"ecg_id": [r[0] for r in rows], "split": [r[1] for r in rows],
                      "report": [r[2] for r in rows],
                      "scp_codes": [json.dumps(r[3]) for r in rows]})
    pq.write_table(table, folder / "part-0.parquet")
    return folder


def test_records_without_text_are_counted_not_dropped(tmp_path: Path) -> None:
    folder = _records(tmp_path, [
        (1, "train", "", {"NORM": 100.0}), (2, "train", "", {"UNKNOWN": 100.0}),
        (3, "valid", "", {"1AVB": 100.0, "SR": 0.0}), (4, "test", "", {})])
    texts = read_record_texts(folder, ST, "statements")
    assert texts.counts() == {"train": {"records": 2, "with_text": 1, "missing_text": 1},
                              "valid": {"records": 1, "with_text": 1, "missing_text": 0},
                              "test": {"records": 1, "with_text": 0, "missing_text": 1}}
    assert texts.ids("train") == [1] and texts.ids("train", with_text=False) == [1, 2]
    np.testing.assert_array_equal(texts.labels[:, [0, 3]], [[1, 0], [0, 0], [0, 1], [0, 0]])
    texts.require(("train", "valid"))
    with pytest.raises(PretrainDataError, match=r"split 'test'.*1 without text"):
        texts.require()


def test_batch_must_fit_each_worker() -> None:
    assert steps_per_epoch(100, 2, 16) == 3
    with pytest.raises(PretrainDataError, match="pretrain.batch_size"):
        steps_per_epoch(20, 2, 16)
