"""Readable command output: the line filters, the log file and the failure tail."""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import pytest

from ecglm.cli import _log_file, build_parser
from ecglm.utils.logs import (LineFilter, is_progress, log_file, loop_tag, quiet_output,
                              shown, split_worker_prefix)
from tests.helpers import REPO

OWN = ("ecglm", "tests")
"""Prints of this test module count as ecglm's own output."""

TRAIN_LINE = "\x1b[36m(RayTrainWorker pid=6981)\x1b[0m [train] step 3/20 loss 2.6502 ETA 197s"
NOISE_LINE = "\x1b[36m(TrainController pid=6851)\x1b[0m Requesting resources: {'CPU': 1.0} * 2"


def test_worker_prefix_is_split_and_colours_removed() -> None:
    assert split_worker_prefix(TRAIN_LINE) == ("RayTrainWorker pid=6981",
                                               "[train] step 3/20 loss 2.6502 ETA 197s")
    assert split_worker_prefix("(raylet) WARNING: 8 PYTHON workers")[0] == "raylet"
    assert split_worker_prefix("[demo] counts: {}") == (None, "[demo] counts: {}")
    assert split_worker_prefix("(gold ['no']) answer")[0] is None  # not a Ray prefix


def test_own_lines_and_worker_progress_are_shown() -> None:
    assert shown("=== 2/5 train ===", own=True) == "=== 2/5 train ==="
    assert shown("Trial status: 1 PENDING", own=False) is None  # a library's print
    assert shown(TRAIN_LINE, own=False) == "[train] step 3/20 loss 2.6502 ETA 197s"
    assert shown(NOISE_LINE, own=False) is None
    assert shown(NOISE_LINE, own=True) is None
    assert is_progress("  [ecglm.data] read 300 records") and not is_progress("Loading weights")
    assert loop_tag("[ecglm.data] read 190/300 records (34.3 records/s, 4.1 MB/s)") == \
        "[ecglm.data]"
    assert loop_tag("[eval] 24/81 generated (0.57/s, ETA 101s)") == "[eval]"
    assert loop_tag("[demo] data source: shared (/work/shared/data)") is None


def _library_print(stream: io.TextIOBase, text: str) -> None:
    """``print`` from a module that is not ours (this one, seen from a filter without
    ``tests`` in its own modules)."""
    print(text, file=stream)


def test_line_filter_logs_everything_and_shows_own_lines() -> None:
    term, log = io.StringIO(), io.StringIO()
    mine = LineFilter(term, log, OWN)
    mine.write("[demo] a")
    assert term.getvalue() == "" and log.getvalue() == ""
    mine.write("bc\n" + NOISE_LINE + "\n" + TRAIN_LINE + "\nbar 10%\rbar 100%\r")
    mine.close_pending()
    assert term.getvalue() == (
        "[demo] abc\n[train] step 3/20 loss 2.6502 ETA 197s\n")
    assert log.getvalue() == f"[demo] abc\n{NOISE_LINE}\n{TRAIN_LINE}\nbar 10%\rbar 100%\r"
    term2, log2 = io.StringIO(), io.StringIO()
    theirs = LineFilter(term2, log2, ("ecglm",))
    _library_print(theirs, "Trial status: 1 PENDING")
    _library_print(theirs, TRAIN_LINE)
    assert term2.getvalue() == "[train] step 3/20 loss 2.6502 ETA 197s\n"
    assert log2.getvalue() == f"Trial status: 1 PENDING\n{TRAIN_LINE}\n"


def test_quiet_output_routes_and_restores(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    logger = logging.getLogger("ecglm.test.library")
    handler = logging.StreamHandler(sys.stderr)
    logger.addHandler(handler)
    try:
        path = log_file(tmp_path / "runs", "exp", "data shard")
        assert path.parent == (tmp_path / "runs" / "exp" / "logs").resolve()
        assert path.name.startswith("data-shard-") and path.suffix == ".log"
        out0, err0 = sys.stdout, sys.stderr
        with quiet_output(path, own_modules=OWN) as got:
            assert got == path
            print("[demo] stage line")
            print("error: shown on stderr", file=sys.stderr)
            print(NOISE_LINE)
            logger.warning("library chatter")
        assert sys.stdout is out0 and sys.stderr is err0 and handler.stream is err0
        captured = capsys.readouterr()
        assert captured.out == f"[ecglm] Ray and library logs: {path} (ecglm -v shows them " \
                               "here)\n[demo] stage line\n"
        assert captured.err == "error: shown on stderr\n"
        text = path.read_text()
        assert "[demo] stage line" in text and NOISE_LINE in text and "library chatter" in text
    finally:
        logger.removeHandler(handler)


def test_quiet_output_shows_the_log_tail_on_failure(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.log"
    with pytest.raises(RuntimeError, match="boom"):
        with quiet_output(path, own_modules=OWN):
            print(NOISE_LINE)
            raise RuntimeError("boom")
    err = capsys.readouterr().err
    assert f"[ecglm] failed (RuntimeError); last lines of {path}:" in err
    assert "Requesting resources" in err


def test_verbose_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with quiet_output(tmp_path / "never.log", verbose=True) as got:
        print(NOISE_LINE)
    assert got is None and not (tmp_path / "never.log").exists()
    assert capsys.readouterr().out == NOISE_LINE + "\n"


def test_cli_has_a_global_verbose_flag() -> None:
    args = build_parser().parse_args(["-v", "demo", "jobs/configs/quickstart.yaml"])
    assert args.verbose and args.command == "demo"
    assert not build_parser().parse_args(["demo", "x.yaml"]).verbose


def test_ray_commands_log_under_the_run_folder(tmp_path: Path) -> None:
    parser = build_parser()
    cfg = str(REPO / "jobs/configs/tiny.yaml")
    train = parser.parse_args(["train", cfg, f"output_dir={tmp_path}"])
    path = _log_file(train)
    assert path is not None and path.parent == (tmp_path / "tiny" / "logs").resolve()
    assert path.name.startswith("train-")
    assert _log_file(parser.parse_args(["export", cfg, "--checkpoint", "x", "--out", "y"])) \
        is None
    assert _log_file(parser.parse_args(["train", str(tmp_path / "missing.yaml")])) is None


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_lines_overwrite_each_other_on_a_terminal() -> None:
    term, log = _Tty(), io.StringIO()
    f = LineFilter(term, log, OWN)
    f.write("[train] step 1/3 ETA 2s\n[train] step 2/3 ETA 1s\n[train] step 3/3 ETA 0s\n")
    f.write("=== 3/5 sweep\n[eval] 8/8 generated (0.6/s, ETA 0s)\n")
    f.write("[demo] data source: shared (/work/shared/data)\n[demo] counts: {}\n")
    f.close_pending()
    assert term.getvalue() == ("[train] step 1/3 ETA 2s\r\x1b[2K[train] step 2/3 ETA 1s"
                               "\r\x1b[2K[train] step 3/3 ETA 0s\n=== 3/5 sweep\n"
                               "[eval] 8/8 generated (0.6/s, ETA 0s)\n"
                               "[demo] data source: shared (/work/shared/data)\n"
                               "[demo] counts: {}\n")
    assert log.getvalue().count("\n") == 7


def test_prints_through_a_print_wrapper_keep_their_origin() -> None:
    """Ray Data's tqdm replaces ``builtins.print`` in the driver; a print of ours through it
    is still ours."""
    term, log = io.StringIO(), io.StringIO()
    f = LineFilter(term, log, OWN)
    wrapper_globals = {"__name__": "ray.experimental.tqdm_ray", "__builtins__": __builtins__}
    exec("def safe_print(*args, **kwargs):\n    print(*args, **kwargs)\n", wrapper_globals)
    wrapper_globals["safe_print"]("[ecglm.data] read 3/4 records", file=f)
    assert term.getvalue() == "[ecglm.data] read 3/4 records\n"


def test_user_errors_get_no_log_tail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(FileNotFoundError):
        with quiet_output(tmp_path / "run.log", own_modules=OWN,
                          user_errors=(FileNotFoundError,)):
            raise FileNotFoundError("no such checkpoint")
    assert capsys.readouterr().err == ""


def test_progress_lines_are_thinned_off_a_terminal() -> None:
    term, log = io.StringIO(), io.StringIO()
    f = LineFilter(term, log, OWN)
    f.write("=== 2/5 train\n")
    f.write("".join(f"[train] step {k}/5 0.7 ex/s\n" for k in range(1, 6)))
    f.write("[eval] 8/8 generated\n=== 3/5 sweep\n")
    f.close_pending()
    assert term.getvalue() == ("=== 2/5 train\n[train] step 1/5 0.7 ex/s\n"
                               "[train] step 5/5 0.7 ex/s\n[eval] 8/8 generated\n"
                               "=== 3/5 sweep\n")
    assert log.getvalue().count("[train]") == 5
