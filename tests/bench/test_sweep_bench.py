"""The sweep benchmark (``jobs/bench/sweep.py``): its four sweeps are valid configs of the same
8-trial grid / sampled space, and the noise band of the ASHA-vs-FIFO comparison. The
benchmark itself (four sweeps, minutes) runs outside CI; its numbers are in the README."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from ecglm.config.search_space import parse_search_space
from ecglm.tuning.sweep import _check_keys, expected_trials
from tests.helpers import REPO, load_script

SCRIPT = REPO / "jobs" / "bench" / "sweep.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script(SCRIPT, "sweep_bench")


def test_grids_have_eight_and_four_trials_and_sampled_space_is_valid(bench: ModuleType,
                                                         tmp_path: Path) -> None:
    for scheduler in ("asha", "fifo"):
        for grid, n in ((bench.GRID, 8), (bench.QUICK_GRID, 4)):
            cfg = bench.sweep_config(tmp_path, "b", grid, "tune.search=grid",
                                     f"tune.scheduler={scheduler}")
            assert expected_trials(cfg, _check_keys(cfg)) == n
    for search in ("optuna", "random"):
        cfg = bench.sweep_config(tmp_path, "b", bench.SAMPLED, f"tune.search={search}",
                                 "tune.num_samples=4")
        dims = parse_search_space(cfg.tune.search_space, search)
        assert {d.kind for d in dims.values()} == {"lograndint", "loguniform"}
        assert expected_trials(cfg, _check_keys(cfg)) == 4


def test_noise_is_the_spread_of_the_better_half(bench: ModuleType) -> None:
    assert bench.noise([1.0, 2.0, 10.0, 20.0], "min") == pytest.approx(0.7071, abs=1e-4)
    assert bench.noise([1.0, 2.0, 10.0, 20.0], "max") == pytest.approx(7.0711, abs=1e-4)
    assert bench.noise([3.0], "min") == 0.0
