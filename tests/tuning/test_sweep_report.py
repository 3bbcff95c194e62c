"""Sweep report: parameter importance, the five figures, the HTML page, edge cases, and the
throughput/cost section of a training run's report. CPU only, no Ray, no MLflow."""

from __future__ import annotations

import base64
import math
import re
from pathlib import Path
from typing import Any, Optional

import pytest

from ecglm.tuning.report import (FIGURES, TrialRecord, cost_section_html, parameter_importance,
                                 write_sweep_report)
from ecglm.tuning.records import best_first, param_axis, pareto_front

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LRS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3)
NOISE_R = (8, 4, 16, 4, 16, 8)  # unrelated to the metric
SPACE = {"train.lr": {"loguniform": [1e-5, 1e-2]}, "lora.r": [4, 8, 16]}


def _trial(i: int, params: dict[str, Any], metric: Optional[float], status: str = "FINISHED",
           tokens: Optional[float] = 1000.0) -> TrialRecord:
    value = 0.0 if metric is None or math.isnan(metric) else metric
    curve = tuple((s, value * s / 40) for s in (10, 20, 30, 40))
    return TrialRecord(name=f"trial-{i}-" + "-".join(f"{k}={v}" for k, v in params.items()),
                       run_id=f"run{i:02d}", params=params, metric=metric, status=status,
                       curve=curve, wall_s=60.0 * (i + 1), worker_hours=0.02 * (i + 1),
                       tokens_per_s=tokens, steps=40 if status == "FINISHED" else 20)


def _sweep(mode: str) -> list[TrialRecord]:
    """Six trials whose metric is a smooth function of log10(lr) (better for larger lr) with
    no dependence on lora.r; in ``min`` mode the metric is a loss, in ``max`` an accuracy."""
    out = []
    for i, (lr, r) in enumerate(zip(LRS, NOISE_R)):
        quality = math.log10(lr / 1e-5) / 2.5  # 0 .. ~1
        metric = 2.0 - quality if mode == "min" else 0.2 + 0.5 * quality
        out.append(_trial(i, {"train.lr": lr, "lora.r": r}, metric,
                          status="KILLED" if i in (0, 2) else "FINISHED",
                          tokens=None if i == 3 else 500.0 * (6 - i)))
    return out


def _rows(page: str) -> list[list[str]]:
    """Cells of the rows of the trials table (header excluded)."""
    table = page.split("<h2>Trials, best first</h2>", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table)
    return [re.findall(r"<td>(.*?)</td>", r) for r in rows if "<td>" in r]


def test_importance_ranks_the_informative_parameter_first() -> None:
    trials = _sweep("max")
    imp = parameter_importance(trials)
    assert list(imp)[0] == "train.lr" and imp["train.lr"] > 0.6
    assert set(imp) == {"train.lr", "lora.r"}
    assert sum(imp.values()) == pytest.approx(1.0)
    assert all(0.0 <= v <= 1.0 for v in imp.values())
    assert parameter_importance(trials) == imp  # seeded: the same every time


def test_importance_is_empty_when_it_cannot_be_computed() -> None:
    trials = _sweep("max")
    assert parameter_importance(trials[:2]) == {}  # fewer than 3 finite metrics
    nan = [_trial(i, t.params, float("nan")) for i, t in enumerate(trials)]
    assert parameter_importance(nan) == {}
    same = [_trial(i, {"lora.r": 8}, 0.1 * i) for i in range(5)]
    assert parameter_importance(same) == {}  # no parameter varies
    flat = [_trial(i, {"lora.r": r}, 0.5) for i, r in enumerate((4, 8, 16))]
    assert parameter_importance(flat) == {}  # nothing to explain


def test_importance_one_value_param_scores_zero_and_categories_are_summed() -> None:
    trials = [_trial(i, {"train.lr": lr, "model": "tiny", "lora.target_modules": tm},
                     0.1 * i)
              for i, (lr, tm) in enumerate(zip(LRS, ["all-linear", "q_proj,v_proj"] * 3))]
    imp = parameter_importance(trials)
    assert imp["model"] == 0.0 and list(imp)[0] == "train.lr"
    assert set(imp) == {"train.lr", "model", "lora.target_modules"}  # one key per parameter
    assert sum(imp.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("mode", ["min", "max"])
def test_report_files_html_and_best_first_table(tmp_path: Path, mode: str) -> None:
    trials = _sweep(mode)
    best = trials[-1]  # largest lr: lowest loss / highest accuracy
    report = write_sweep_report(tmp_path / "sweep", trials, metric="valid/metric", mode=mode,
                                space=SPACE, best_run_id=best.run_id, title=f"Sweep <{mode}>")
    assert report.html == tmp_path / "sweep" / "sweep_report.html"
    assert set(report.pngs) == set(FIGURES)
    page = report.html.read_text(encoding="utf-8")
    for name, path in report.pngs.items():
        data = path.read_bytes()
        assert path.parent == report.html.parent and path.name == f"{name}.png"
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
        assert base64.b64encode(data).decode("ascii") in page  # the same image, embedded
    assert page.count('<img src="data:image/png;base64,') == len(FIGURES)
    assert best.run_id in page and "Sweep &lt;" + mode + "&gt;" in page
    assert all(t.name in page for t in trials)
    assert all(k in page for k in SPACE) and "loguniform" in page
    rows = _rows(page)
    assert rows[0][0] == best.name and "<tr class='best'>" in page
    metrics = [float(r[3]) for r in rows]
    assert metrics == sorted(metrics, reverse=(mode == "max"))
    assert list(report.importance)[0] == "train.lr"


def test_single_trial_all_nan_and_string_params(tmp_path: Path) -> None:
    one = [_trial(0, {"train.lr": 1e-4}, 0.3)]
    rep = write_sweep_report(tmp_path / "one", one, metric="m", mode="max", space={},
                             best_run_id="run00", title="one")
    assert rep.importance == {} and all(p.stat().st_size > 1000 for p in rep.pngs.values())
    assert _rows(rep.html.read_text(encoding="utf-8"))[0][0] == one[0].name

    nan = [_trial(i, {"train.lr": lr}, m)
           for i, (lr, m) in enumerate(zip(LRS[:3], (None, float("nan"), None)))]
    rep = write_sweep_report(tmp_path / "nan", nan, metric="m", mode="min", space=SPACE,
                             best_run_id="", title="nan")
    page = rep.html.read_text(encoding="utf-8")
    assert rep.importance == {} and "trials without a metric" in page and "none found" in page

    mixed = [_trial(0, {"lora.target_modules": "all-linear", "train.lr": 1e-4}, 0.5),
             _trial(1, {"lora.target_modules": "q_proj,v_proj", "use_rag": True}, 0.4,
                    status="KILLED", tokens=None),
             _trial(2, {"lora.target_modules": "all-linear", "use_rag": False}, 0.7),
             _trial(3, {"lora.target_modules": "q_proj,v_proj"}, float("nan"))]
    rep = write_sweep_report(tmp_path / "mixed", mixed, metric="m", mode="max",
                             space={"lora.target_modules": ["all-linear", "q_proj,v_proj"]},
                             best_run_id="not-a-trial", title="mixed")
    page = rep.html.read_text(encoding="utf-8")
    assert _rows(page)[0][0] == mixed[2].name  # best by metric when the run id is unknown
    assert "no trial has run id not-a-trial" in page
    assert sum(rep.importance.values()) == pytest.approx(1.0)
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in rep.pngs.values())


def test_bad_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        write_sweep_report(tmp_path, _sweep("max"), metric="m", mode="maximize", space={},
                           best_run_id="", title="t")


def test_axes_ordering_and_pareto_front() -> None:
    assert param_axis("lr", [1e-5, 1e-3]).kind == "log"
    assert param_axis("lr", [1e-4, 9e-3]).kind == "linear"  # under two decades
    assert param_axis("x", [-1.0, 100.0]).kind == "linear"
    flag = param_axis("flag", [True, False, None])
    assert flag.kind == "categorical" and flag.categories == ("False", "True")
    assert math.isnan(flag.unit(None)) and flag.unit(True) == 1.0
    trials = [_trial(0, {}, 0.5), _trial(1, {}, None), _trial(2, {}, 0.9), _trial(3, {}, 0.1)]
    assert [t.run_id for t in best_first(trials, "max")] == ["run02", "run00", "run03", "run01"]
    assert [t.run_id for t in best_first(trials, "min", "run00")][:2] == ["run00", "run03"]
    costs, metrics = [1.0, 2.0, 3.0, 4.0, 2.0], [0.5, 0.4, 0.7, 0.6, float("nan")]
    assert pareto_front(costs, metrics, "max") == [0, 2]
    assert pareto_front(costs, metrics, "min") == [0, 1]


def test_cost_section_formats_the_numbers() -> None:
    heading, body = cost_section_html(wall_s=3723.4, num_workers=2, worker_hours=2.0683,
                                      examples_per_s=12.345, tokens_per_s=23456.7, steps=500,
                                      device="cuda <H200>")
    assert heading == "Throughput and cost"
    for text in ("3,723.4 s (1:02:03)", "2.068 worker-hours", "12.3", "23,457", "11,728",
                 "7.45", "500", "cuda &lt;H200&gt;"):
        assert text in body, text
    _, body = cost_section_html(wall_s=10.0, num_workers=1, worker_hours=10 / 3600,
                                examples_per_s=None, tokens_per_s=None, steps=0, device="cpu")
    assert body.count("unknown") == 3
    with pytest.raises(ValueError, match="num_workers"):
        cost_section_html(wall_s=1.0, num_workers=0, worker_hours=0.0, examples_per_s=None,
                          tokens_per_s=None, steps=1, device="cpu")
