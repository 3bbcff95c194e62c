"""``ecglm data check`` at scale: every odd file kind is reported with its reason, in the
same order whatever the number of workers, and the reader rejects implausible headers for
training ingest too.

The odd files are written in ``tmp_path`` around one good record written with
``wfdb.wrsamp`` (a synthetic 12-lead ECG), so these tests need no shared data. Permission
cases: as root, permissions do not apply, so they run in a forked child that has dropped to
the ``nobody`` user (skipped where that is impossible).
"""

from __future__ import annotations

import functools
import io
import json
import os
import pwd
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import wfdb

from ecglm.cli import main
from ecglm.config.schema import NormalizeConfig
from ecglm.data import RecordError, read_record
from ecglm.data.check import CheckSettings, check_report, summary
from ecglm.data.check_progress import ProgressLine, format_eta
from ecglm.data.readers import HeaderLimits, scan_paths
from ecglm.data.sharding import read_records_batch
from tests.helpers import CINC, ODD, synthetic_ecg

POLICY = NormalizeConfig()
SETTINGS = CheckSettings(POLICY, 500, 5000)
LEAD_NAMES = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


@functools.lru_cache(maxsize=1)
def _ecg() -> tuple[np.ndarray, int]:
    """``((T, 12) float64 mV, fs Hz)``: a synthetic 10 s ECG, computed once."""
    x, fs, _ = synthetic_ecg(10.0)
    return x.T.astype(np.float64), fs


def write_good(folder: Path, name: str = "good") -> Path:
    """A 10 s, 500 Hz, 12-lead WFDB record (format 16, 1000 adu/mV) at ``folder/name``."""
    folder.mkdir(parents=True, exist_ok=True)
    signal, fs = _ecg()
    wfdb.wrsamp(name, fs=fs, units=["mV"] * 12, sig_name=LEAD_NAMES, p_signal=signal,
                fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12,
                write_dir=str(folder))
    return folder / name


def variant(good: Path, name: str, record_tail: str | None = None,
            with_dat: bool = True) -> Path:
    """Copy of ``good`` named ``name``; ``record_tail`` replaces what follows the signal count
    on the record line (e.g. ``"500 -5"``); ``with_dat=False`` leaves the signal file out."""
    lines = good.with_suffix(".hea").read_text().splitlines()
    first = lines[0].split()
    tail = record_tail if record_tail is not None else " ".join(first[2:])
    out = [f"{name} {first[1]} {tail}".rstrip()]
    out += [ln.replace(f"{good.name}.dat", f"{name}.dat") for ln in lines[1:]]
    target = good.parent / name
    target.with_suffix(".hea").write_text("\n".join(out) + "\n")
    if with_dat:
        shutil.copyfile(good.with_suffix(".dat"), target.with_suffix(".dat"))
    return target


def build_odd_folder(folder: Path) -> dict[str, tuple[str, str, str]]:
    """Every odd file kind next to a good record; returns ``{entry path: (status, field,
    reason fragment)}`` of what the check must report."""
    good = write_good(folder)
    expect: dict[str, tuple[str, str, str]] = {str(good): ("ok", "", "")}
    (folder / "dangling_hea.hea").symlink_to(folder / "nowhere.hea")
    expect[str(folder / "dangling_hea")] = ("quarantined", "symlink", "dangling symlink")
    dd = variant(good, "dangling_dat", with_dat=False)
    (folder / "dangling_dat.dat").symlink_to(folder / "gone.dat")
    expect[str(dd)] = ("quarantined", "symlink", "dangling symlink")
    shutil.copyfile(good.with_suffix(".dat"), folder / "orphan.dat")
    expect[str(folder / "orphan.dat")] = ("quarantined", "header", "orphan signal file")
    (folder / "orphan_link.dat").symlink_to(folder / "gone2.dat")
    expect[str(folder / "orphan_link.dat")] = ("quarantined", "header", "orphan dangling")
    nodat = variant(good, "no_dat", with_dat=False)
    expect[str(nodat)] = ("quarantined", "file", "missing file")
    (folder / "empty.hea").write_text("")
    expect[str(folder / "empty")] = ("quarantined", "header", "empty header file")
    empty_dat = variant(good, "empty_dat")
    empty_dat.with_suffix(".dat").write_bytes(b"")
    expect[str(empty_dat)] = ("quarantined", "file", "empty signal file")
    for name, tail, fld, frag in [
            ("neg_len", "500 -5", "header.sig_len", "'-5'"),
            ("zero_len", "500 0", "header.sig_len", "0 samples per signal"),
            ("huge_len", "500 500000000000", "header.sig_len", "more than the maximum 24 h"),
            ("zero_fs", "0 5000", "header.fs", "expected > 0 Hz"),
            ("huge_fs", "5000000 5000", "header.fs", "outside the plausible range")]:
        expect[str(variant(good, name, tail))] = ("quarantined", fld, frag)
    (folder / "notes.txt").write_text("not a record")
    return expect


def _rows(results: list) -> dict[str, tuple[str, str, str]]:
    return {r.record: (r.status, r.field, r.reason) for r in results}


def test_every_odd_kind_is_reported(tmp_path: Path) -> None:
    expect = build_odd_folder(tmp_path / "odd")
    report = check_report([tmp_path / "odd"], SETTINGS, workers=1)
    rows = _rows(report.results)
    assert set(rows) == set(expect)
    for path, (status, fld, frag) in expect.items():
        got = rows[path]
        assert got[0] == status and got[1] == fld and frag in got[2], (path, got)
    s = summary(report.results, report.other_files)
    assert s["in"] == len(expect) == s["ok"] + s["quarantined"] and s["ok"] == 1
    assert s["other_files"] == 1  # notes.txt
    assert s["reasons"] == {"file": 2, "header": 3, "header.fs": 2, "header.sig_len": 3,
                            "symlink": 2}
    # the table order is the sorted path order, stable from run to run
    assert [r.record for r in report.results] == sorted(expect)
    assert check_report([tmp_path / "odd"], SETTINGS, workers=1) == report


def test_parallel_equals_one_worker(tmp_path: Path) -> None:
    build_odd_folder(tmp_path / "odd")
    for k in range(6):
        write_good(tmp_path / "more", f"rec{k}")
    paths = [tmp_path / "odd", tmp_path / "more"]
    serial = check_report(paths, SETTINGS, workers=1)
    parallel = check_report(paths, SETTINGS, workers=2, chunk_size=2)  # 12 chunks, 8 in flight
    assert parallel == serial
    assert [r.record for r in serial.results][:2] == [str(tmp_path / "odd" / "dangling_dat"),
                                                      str(tmp_path / "odd" / "dangling_hea")]


def test_cli_flags_progress_and_json(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    expect = build_odd_folder(tmp_path / "odd")
    args = ["data", "check", str(tmp_path / "odd"), "--workers", "2"]
    assert main([*args, "--progress"]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    final = json.loads(lines[-1])
    assert final["in"] == len(expect) and final["quarantined"] == len(expect) - 1
    assert lines[0].split() == ["record", "status", "reason"] and len(lines) == len(expect) + 3
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"[check] {len(expect)}/{len(expect)} files (100.0%)")
    assert "files/s" in last and "MB/s" in last and "ETA 0s" in last
    assert main(args) == 0  # stderr is not a terminal: no progress unless asked
    out2, err2 = capsys.readouterr()
    assert out2 == out and "[check]" not in err2
    # a shorter --max-record-seconds rejects the good 10 s record by its header
    assert main([*args, "--workers", "1", "--max-record-seconds", "5"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    # the table cuts long record paths from the left ("...<tail>"): match the tail
    good = next(ln for ln in rows[2:-1] if ln.split()[0].endswith("/odd/good"))
    assert "quarantined" in good and "header.sig_len" in good and "more than the maximum" in good
    assert main([*args, "--workers", "0"]) == 2
    assert "expected >= 1" in capsys.readouterr().err


def test_ingest_rejects_what_check_rejects(tmp_path: Path) -> None:
    """Shard building reads through the same reader: the same fields and reasons."""
    expect = build_odd_folder(tmp_path / "odd")
    paths = [p for p, (status, fld, _) in expect.items()
             if status == "quarantined" and fld.startswith(("header.", "symlink"))]
    out = read_records_batch(pd.DataFrame({"path": paths}), 500, 5000, POLICY)
    for path, error in zip(paths, out["error"]):
        _, fld, frag = expect[path]
        assert error.startswith(f"record {path}: {fld}: ") and frag in error


def test_header_limits_in_the_reader(tmp_path: Path) -> None:
    good = write_good(tmp_path)
    assert read_record(good, POLICY, 500, 5000).signal.shape == (12, 5000)
    with pytest.raises(RecordError) as err:
        read_record(good, POLICY, 500, 5000, HeaderLimits(max_seconds=5.0))
    assert err.value.field == "header.sig_len" and "5000 samples per signal at 500 Hz" in \
        err.value.reason
    # no sig_len on the record line: the length the signal file implies is checked
    no_len = variant(good, "no_len", "500")
    assert read_record(no_len, POLICY, 500, 5000).signal.shape == (12, 5000)
    with pytest.raises(RecordError) as err:
        read_record(no_len, POLICY, 500, 5000, HeaderLimits(max_seconds=5.0))
    assert err.value.field == "header.sig_len" and "no sig_len in the header" in \
        err.value.reason
    for tail, fld, frag in [("500 12.5", "header.sig_len", "not a whole number"),
                            ("abc 5000", "header.fs", "not a number"),
                            ("5 5000", "header.fs", "[10, 50000] Hz")]:
        with pytest.raises(RecordError) as err:
            read_record(variant(good, "bad", tail), POLICY, 500, 5000)
        assert err.value.field == fld and frag in err.value.reason, (tail, err.value)
    zero_sig = variant(good, "zero_sig")
    zero_sig.with_suffix(".hea").write_text("zero_sig 0 500 5000\n")
    with pytest.raises(RecordError, match="header.n_sig: signal count 0"):
        read_record(zero_sig, POLICY, 500, 5000)
    with pytest.raises(ValueError, match="max_seconds"):
        HeaderLimits(max_seconds=0)


def test_orphan_dat_named_by_another_header_is_not_orphan(tmp_path: Path) -> None:
    good = write_good(tmp_path)
    shared = variant(good, "other")  # other.hea names other.dat ...
    shared.with_suffix(".dat").rename(tmp_path / "signals.dat")  # ... now signals.dat
    hea = shared.with_suffix(".hea")
    hea.write_text(hea.read_text().replace("other.dat", "signals.dat"))
    scan = scan_paths([tmp_path])
    assert [e.path for e in scan.entries] == [str(good), str(shared)]
    assert not any(e.problem for e in scan.entries) and scan.other_files == 0


def test_progress_line_throttled() -> None:
    now = [0.0]
    buf = io.StringIO()
    line = ProgressLine(buf, live=True, interval_s=0.25, clock=lambda: now[0])
    line.start(100, done=10)
    for _ in range(9):  # 9 updates within 0.2 s: one write
        now[0] += 0.025
        line.update(5, 1_000_000)
    assert buf.getvalue().count("\r") == 1
    now[0] = 1.0
    line.update(10, 0)
    line.close()
    text = buf.getvalue()
    assert text.endswith("\n") and text.count("\r") == 3
    assert "[check] 65/100 files (65.0%) 55.0 files/s 9.00 MB/s ETA 1s" in text
    assert [format_eta(s) for s in (42, 185, 3720, float("inf"))] == ["42s", "3m05s", "1h02m",
                                                                       "?"]
    assert ProgressLine.for_stream(io.StringIO(), None) is None  # not a terminal
    forced = ProgressLine.for_stream(io.StringIO(), True)
    assert forced is not None and not forced.live


# --- permissions ------------------------------------------------------------------------------


def _as_unprivileged(fn: Callable[[], dict]) -> dict:
    """``fn()`` in this process if it is not root, else in a forked child running as
    ``nobody`` (root ignores file permissions); the result comes back as JSON."""
    if os.geteuid() != 0:
        return fn()
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("running as root and there is no 'nobody' user to drop to: file "
                    "permissions do not apply to root")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, run, report, exit without cleanup
        code = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            payload = json.dumps({"ok": fn()})
        except BaseException as exc:  # report anything to the parent
            payload, code = json.dumps({"error": f"{type(exc).__name__}: {exc}"}), 1
        with os.fdopen(write_end, "w") as f:
            f.write(payload)
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        data = json.loads(f.read() or '{"error": "child wrote nothing"}')
    os.waitpid(pid, 0)
    assert "error" not in data, data.get("error")
    return data["ok"]


def test_unreadable_file_and_folder() -> None:
    root = Path(tempfile.mkdtemp(prefix="ecglm-perm-"))  # tmp_path is root-only (0700)
    try:
        root.chmod(0o755)
        good = write_good(root / "recs")
        locked = variant(good, "locked")
        locked.with_suffix(".dat").chmod(0o000)
        variant(good, "locked_hea").with_suffix(".hea").chmod(0o000)
        (root / "recs" / "closed").mkdir()
        write_good(root / "recs" / "closed", "inside")
        (root / "recs" / "closed").chmod(0o000)

        def run() -> dict:
            report = check_report([root / "recs"], SETTINGS, workers=1)
            return {"rows": {r.record: [r.status, r.field, r.reason] for r in report.results},
                    "summary": summary(report.results, report.other_files)}

        got = _as_unprivileged(run)
    finally:
        (root / "recs" / "closed").chmod(0o755)
        shutil.rmtree(root)
    rows = got["rows"]
    assert rows[str(root / "recs" / "good")][0] == "ok"
    assert rows[str(root / "recs" / "locked")][:2] == ["quarantined", "permission"]
    assert "permission denied" in rows[str(root / "recs" / "locked")][2]
    assert rows[str(root / "recs" / "locked_hea")][:2] == ["quarantined", "permission"]
    closed = rows[str(root / "recs" / "closed")]
    assert closed[:2] == ["quarantined", "folder"] and "cannot list folder" in closed[2]
    assert got["summary"]["in"] == 4 and got["summary"]["reasons"] == {"folder": 1,
                                                                       "permission": 2}


def test_shared_odd_parallel(shared_data: Path) -> None:
    """The real odd records and CinC: the same table with 2 workers as with 1."""
    serial = check_report([ODD, CINC], SETTINGS, workers=1)
    assert check_report([ODD, CINC], SETTINGS, workers=2, chunk_size=4) == serial
    assert summary(serial.results, serial.other_files)["quarantined"] == 3
