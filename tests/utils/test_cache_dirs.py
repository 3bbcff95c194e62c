"""Write-once cache folders: two real processes racing for one key, stale temporaries of dead
processes, failed builds (:mod:`ecglm.utils.cache_dirs`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ecglm.utils.cache_dirs import (CACHE_MARKER, clean_stale, has_marker, read_marker,
                                    temp_name, write_once)

REPO = Path(__file__).resolve().parents[2]

RACER = r"""
import json, os, sys, time
from pathlib import Path
from ecglm.utils.cache_dirs import write_once

target, sync = Path(sys.argv[1]), Path(sys.argv[2])

def build(tmp):
    (sync / f"in-build-{os.getpid()}").touch()
    deadline = time.time() + 60
    while len(list(sync.glob("in-build-*"))) < 2:  # both processes are inside build()
        if time.time() > deadline:
            raise TimeoutError("the other process never started its build")
        time.sleep(0.01)
    for i in range(20):  # several files, written slowly: a reader must never see a part
        (tmp / f"part{i}.txt").write_text(str(os.getpid()))
        time.sleep(0.005)
    return {"builder": os.getpid()}

out = write_once(target, build)
print(json.dumps({"pid": os.getpid(), "folder": str(out)}))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "platform"), env.get("PYTHONPATH", "")])
    return env


def _dead_pid() -> int:
    """The pid of a process that has exited (and was reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(proc.stdout)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return pid
    pytest.skip(f"pid {pid} was reused at once")


def _temp_of(target: Path, pid: int) -> Path:
    """The temporary folder name process ``pid`` of this host would build ``target`` in."""
    mine = temp_name(target)
    return mine.with_name(mine.name.replace(f"-{os.getpid()}-", f"-{pid}-"))


def test_two_processes_writing_one_key_share_the_winners_folder(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "key-abc"
    sync = tmp_path / "sync"
    sync.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(target), str(sync)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env()) for _ in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert len(list(sync.glob("in-build-*"))) == 2, "both processes built concurrently"
    assert {r["folder"] for r in results} == {str(target)}
    contents = {(target / f"part{i}.txt").read_text() for i in range(20)}
    assert len(contents) == 1, f"files of two builds mixed: {contents}"
    winner = int(contents.pop())
    assert winner in {r["pid"] for r in results}
    marker = read_marker(target)
    assert marker["builder"] == marker["pid"] == winner and marker["folder"] == "key-abc"
    assert sorted(p.name for p in target.parent.iterdir()) == ["key-abc"], "temps removed"


def test_stale_temp_of_a_dead_process_is_removed(tmp_path: Path) -> None:
    target = tmp_path / "key"
    mine, dead = temp_name(target), _temp_of(target, _dead_pid())
    legacy = tmp_path / f".key.tmp-{_dead_pid()}"
    other_key = _temp_of(tmp_path / "other", _dead_pid())
    unrelated = tmp_path / ".other.tmp-123"  # an earlier layout of another key: not judged
    for folder in (mine, dead, legacy, other_key, unrelated):
        folder.mkdir()
        (folder / "half.bin").write_bytes(b"\0" * 10)
    assert set(clean_stale(target)) == {dead, legacy, other_key}
    assert unrelated.is_dir()
    shutil.rmtree(unrelated)
    assert mine.is_dir(), "a temp of a live process (this one) is kept"
    mine.rename(tmp_path / ".key.tmp-otherhost-1-0123abcd")  # another host: kept until old
    assert clean_stale(target) == []
    os.utime(tmp_path / ".key.tmp-otherhost-1-0123abcd", (0, 0))
    assert clean_stale(target) == [tmp_path / ".key.tmp-otherhost-1-0123abcd"]


def test_write_once_cleans_stale_temps_and_reuses_the_finished_folder(tmp_path: Path) -> None:
    target = tmp_path / "key"
    stale = _temp_of(target, _dead_pid())
    stale.mkdir()
    calls = []

    def build(tmp: Path) -> dict:
        calls.append(tmp)
        (tmp / "config.json").write_text("{}")
        return {"n": len(calls)}

    assert write_once(target, build, required=("config.json",)) == target
    assert not stale.exists() and has_marker(target, CACHE_MARKER, ("config.json",))
    assert write_once(target, build, required=("config.json",)) == target
    assert len(calls) == 1, "a finished folder is reused, not rebuilt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]


def test_failed_build_leaves_nothing_visible(tmp_path: Path) -> None:
    target = tmp_path / "key"

    def broken(tmp: Path) -> dict:
        (tmp / "part.bin").write_bytes(b"x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_once(target, broken)
    with pytest.raises(RuntimeError, match="config.json"):
        write_once(target, lambda tmp: None, required=("config.json",))
    assert list(tmp_path.iterdir()) == []


def test_outdated_folder_is_replaced_when_invalid(tmp_path: Path) -> None:
    target = tmp_path / "key"
    write_once(target, lambda tmp: (tmp / "v.txt").write_text("1") and {"v": 1})
    assert write_once(target, lambda tmp: None) == target and read_marker(target)["v"] == 1
    out = write_once(target, lambda tmp: (tmp / "v.txt").write_text("2") and {"v": 2},
                     is_finished=lambda p: (p / "v.txt").read_text() == "2")
    assert (out / "v.txt").read_text() == "2" and read_marker(out)["v"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]
