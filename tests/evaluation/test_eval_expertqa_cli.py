"""``ecglm eval-expertqa``: prediction files joined to the fixture benchmark, JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecglm.cli import main
from ecglm.evaluation.expertqa import attach_predictions, load_predictions, reference_rows

FIXTURE = Path(__file__).parent / "fixtures" / "expertqa"
ANSWERS = {"CK:0": "The QRS complex reflects ventricular depolarisation.",
           "CK:1": "Between 60 and 100 beats per minute.",
           "CK:2": "A first degree atrioventricular block.",
           "CD:0": "Irregular RR intervals.", "CD:1": "The inferior wall."}


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path]:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("name: xqa\n")
    preds = tmp_path / "preds.jsonl"
    lines = [{"item_id": k, "prediction": v} for k, v in ANSWERS.items()]
    lines.append({"item_id": "MROD:0", "turn": 1, "prediction": "Keep running."})
    preds.write_text("\n".join(json.dumps(x) for x in lines))
    return cfg, preds


def test_prediction_formats_and_join(tmp_path: Path) -> None:
    from ecglm.data.expertqa import load_expert_qa

    rows = reference_rows(load_expert_qa(FIXTURE))
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"CK:0": "qrs", "MROD:0": ["fine", "no"]}))
    got, missing = attach_predictions(rows, load_predictions(p))
    assert {(r["item_id"], r["turn"]): r["prediction"] for r in got}[("MROD:0", "1")] == "no"
    assert "CK:1:0" in missing and "CK:0:0" not in missing and len(missing) == len(rows) - 3
    p.write_text(json.dumps([{"item_id": "XX:9", "prediction": "?"}]))
    with pytest.raises(ValueError, match="unknown"):
        attach_predictions(rows, load_predictions(p))
    p.write_text(json.dumps([{"prediction": "?"}]))
    with pytest.raises(ValueError, match="entry 0"):
        load_predictions(p)


def test_cli_scores_per_task(files, java, wordnet, capsys) -> None:
    cfg, preds = files
    assert main(["eval-expertqa", str(cfg), "--data", str(FIXTURE),
                 "--predictions", str(preds)]) == 0
    out = json.loads(capsys.readouterr().out)
    m = out["metrics"]
    assert out["n_rows"] == 7 and out["missing"] == ["MROD:0:0"] and out["judge"] == "none"
    assert m["CK/bleu1"] > 0.95 and m["CK/rouge_l"] > 0.95 and m["CK/n"] == 3.0
    assert m["CK/meteor"] > m["CD/meteor"] > m["MROD/meteor"]
    assert m["overall/n_tasks"] == 3.0 and not any("judge" in k for k in m)


def test_cli_with_openai_judge(files, java, wordnet, server, capsys,  # noqa: F811
                               monkeypatch) -> None:
    replies, url = server
    monkeypatch.setenv("ECGLM_JUDGE_URL", url)
    replies.replies += ['{"agreement": 3}'] * 7
    cfg, preds = files
    assert main(["eval-expertqa", str(cfg), "evaluation.judge=openai", "--data", str(FIXTURE),
                 "--predictions", str(preds)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["judge_error"] is None and out["metrics"]["CK/judge/agreement"] == 3.0
    assert out["metrics"]["overall/judge/agreement"] == 3.0 and len(replies.requests) == 7


def test_cli_bad_predictions_exit_2(files, tmp_path: Path, capsys) -> None:
    cfg, _ = files
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"item_id": "NOPE:0", "prediction": "x"}]))
    assert main(["eval-expertqa", str(cfg), "--data", str(FIXTURE),
                 "--predictions", str(bad)]) == 2
    assert "unknown" in capsys.readouterr().err
    assert main(["eval-expertqa", str(cfg), "--data", str(FIXTURE),
                 "--predictions", str(tmp_path / "none.json")]) == 2
