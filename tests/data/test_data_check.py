"""``ecglm data check PATH...``: a table of every record and a JSON summary as the last line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecglm.cli import main
from ecglm.data import find_records
from tests.helpers import CINC, ODD, RECORDS500, copy_record, put_nan, truncate_dat


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], dict]:
    code = main(["data", "check", *args])
    lines = capsys.readouterr().out.strip().splitlines()
    return code, lines, json.loads(lines[-1])


def test_check_odd_and_cinc(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, summary = _run([str(ODD), str(CINC)], capsys)
    assert code == 0
    assert set(summary) == {"in", "ok", "quarantined", "flagged", "reasons", "other_files"}
    assert summary["in"] == summary["ok"] + summary["quarantined"]
    assert summary["in"] == len(find_records([ODD, CINC])) == 56
    assert summary == {"in": 56, "ok": 53, "quarantined": 3, "flagged": 2,
                       "reasons": {"amplitude": 1, "leads": 2},
                       "other_files": 1}  # cinc2021's dx_mapping CSV
    rows = {ln.split()[0]: ln for ln in lines[2:-1]}
    assert len(rows) == 56 and lines[0].split() == ["record", "status", "reason"]
    status = {Path(k).name: v.split()[1] for k, v in rows.items()}
    assert {k for k, v in status.items() if v == "quarantined"} == {"100", "S0001",
                                                                      "test01_00s"}
    assert status["s0010_re"] == "ok" and "dropped channels ['vx', 'vy', 'vz']" in \
        rows[str(ODD / "s0010_re")]
    assert status["A1980.mat"] == "ok" and status["JS20004"] == "flagged"
    assert "amplitude: implausible amplitude" in rows[str(ODD / "S0001")]


def test_check_policies_and_corrupt_folder(shared_data: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    for k in (1, 2, 3):
        copy_record(RECORDS500 / f"0000{k}_hr", tmp_path / "mix", f"good{k}")
    truncate_dat(copy_record(RECORDS500 / "00004_hr", tmp_path / "mix", "trunc"), 1000)
    put_nan(copy_record(RECORDS500 / "00005_hr", tmp_path / "mix", "nan"), 3)
    (tmp_path / "mix" / "empty.hea").write_text("")
    (tmp_path / "mix" / "notes.txt").write_text("not a record")
    missing = str(tmp_path / "nothere")
    _, lines, summary = _run([str(tmp_path / "mix"), missing], capsys)
    assert summary == {"in": 7, "ok": 3, "quarantined": 4, "flagged": 0,
                       "reasons": {"file": 2, "header": 1, "signal": 1}, "other_files": 1}
    assert any(missing in ln and "missing file" in ln for ln in lines)
    # NaNs repaired by policy: the record becomes usable (flagged)
    _, lines, summary = _run([str(tmp_path / "mix"), "--set",
                              "data.normalize.nonfinite=interpolate"], capsys)
    assert (summary["in"], summary["ok"], summary["quarantined"], summary["flagged"]) == \
        (6, 4, 2, 1)
    assert any("nan" in ln and "flagged" in ln for ln in lines)
    _, _, summary = _run([str(ODD), "--set", "data.normalize.missing_leads=mask",
                          "data.normalize.amplitude_policy=flag", "--fs", "250"], capsys)
    assert summary["reasons"] == {"leads": 1}  # only test01_00s: no lead at all
    assert (summary["in"], summary["ok"], summary["quarantined"]) == (6, 5, 1)
