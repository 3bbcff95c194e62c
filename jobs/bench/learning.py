"""Proof that models trained with ecglm read ECGs: pretrain -> classify -> QA on real PTB-XL.

On PTB-XL records 1-300 (``../shared/data``; the synthetic fallback is refused: its labels are
not clinical) with patient-level splits (``data.qa_split: seeded``, the same split in every
stage), three stages run in this process, each through the product's own recipe code:

1. **pretrain** (``jobs/configs/pretrain_cmelt.yaml``): the C-MELT encoder against MiniLM
   embeddings of each record's SCP statements, SigLIP loss, ``--pretrain-epochs`` epochs. Its
   zero-shot macro AUC on the test records is reported.
2. **classify** (``jobs/configs/classify_ptbxl.yaml`` with ``encoder.checkpoint`` = the
   pretrained encoder): LoRA + mapper (+ encoder) trained ``--classify-steps`` steps; test
   macro AUC from the model's label probabilities (every label set scored; see
   :mod:`ecglm.tasks.classify`) against the label-prior baseline (training prevalence: AUC 0.5
   by construction).
3. **qa** (``jobs/configs/quickstart.yaml`` with the pretrained encoder): ``--qa-steps``
   steps; test exact match per question type against the majority-answer and question-only
   ("blind") baselines fitted on the training items.

Intervals: percentile bootstrap, 95%, ``--n-boot`` resamples of whole test patients (cluster
bootstrap: records or QA items of one patient move together), the same resamples for a model
and its baselines; ``*_minus_*`` keys are paired differences (above zero: the model is
better). Every stage's MLflow run id and evaluation folder are in the JSON.

Headline keys (last line, JSON): ``classify_macro_auc``, ``classify_prior_auc``,
``qa_em`` and ``qa_majority_em`` / ``qa_blind_em`` (per question type), each with ``_ci95``,
plus ``qa_verify_auc`` (ROC AUC of the model's P(yes) on verify questions: does it rank the
"yes" items higher even where greedy decoding always says "no"?), ``pretrain_zeroshot_macro_auc``,
``classify_auc_minus_prior_ci95``,
``qa_em_minus_majority_ci95``, ``goals`` and ``stage_seconds``.

Usage (about 25 minutes here on 2 cores; ``--quick`` about 10, for a smoke run only)::

    python jobs/bench/learning.py [--quick] [--out runs/bench-learning]
        [--pretrain-epochs N] [--classify-steps N] [--qa-steps N] [--reuse]
        [--pretrain-set K=V] [--classify-set K=V] [--qa-set K=V]   (config overrides)

``--reuse`` keeps stages whose ``<out>/<stage>.json`` exists (e.g. after a crash in QA).
The result is also written to ``<out>/learning.json``, which ``make demo`` prints.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np
import pyarrow.dataset as pads

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "platform"))

from ecglm.config import load_config  # noqa: E402
from ecglm.evaluation.bootstrap import bootstrap, paired_difference  # noqa: E402
from ecglm.evaluation.learning import LEARNING_JSON  # noqa: E402
from ecglm.evaluation.metrics import binary_auc, classification_metrics  # noqa: E402

STAGES = ("pretrain", "classify", "qa")
FULL = {"pretrain_epochs": 30, "classify_steps": 120, "qa_steps": 80}
STAGE_SET: dict[str, list[str]] = {
    "pretrain": [],
    # the pretrained encoder stays frozen (GEM-style): with ~185 training records its
    # contrastive features are worth more than fine-tuning them; mapper + LoRA learn faster
    "classify": ["encoder.trainable=false", "train.lr=1e-3"],
    "qa": ["encoder.trainable=false", "train.lr=1e-3"],
}
"""Overrides each stage applies on top of its preset (``--<stage>-set`` adds more; later
ones win)."""
QUICK = {"pretrain_epochs": 3, "classify_steps": 10, "qa_steps": 10}
GOAL_CLASSIFY_AUC = 0.75


def _cfg(name: str, out: Path, overrides: Sequence[str]) -> Any:
    return load_config(REPO / "jobs" / "configs" / f"{name}.yaml",
                       [f"output_dir={out / name}", *overrides])


def _require_real(manifest: Mapping[str, Any]) -> None:
    if manifest.get("kind") != "shared":
        raise SystemExit(f"learning.py: needs the real PTB-XL records (../shared/data); the "
                         f"data source is {manifest.get('kind')!r} ({manifest.get('source')})")


def stage_pretrain(out: Path, epochs: int, extra: Sequence[str]) -> dict[str, Any]:
    from ecglm.recipes.pretrain import run

    cfg = _cfg("pretrain_cmelt", out, [f"pretrain.epochs={epochs}", *extra])
    res = run(cfg)
    return {"encoder_path": res["encoder_path"], "mlflow_run_id": res["mlflow_run_id"],
            "zeroshot": {k: v for k, v in res["metrics"].items() if "zeroshot" in k}}


def _train_and_evaluate(cfg: Any) -> tuple[Any, dict[str, Any], Path]:
    """Shards -> Ray Train -> evaluation on the test split (the recipe's own steps)."""
    from ecglm.recipes.common import evaluate_prepared, ray_lifecycle
    from ecglm.recipes.eval_worker import eval_resources
    from ecglm.train.resources import check_resources
    from ecglm.train.run import prepare, run_training

    with ray_lifecycle(cfg):
        check_resources(cfg, eval_task=eval_resources(cfg))
        prep = prepare(cfg)
        _require_real(prep.shards.manifest)
        res = run_training(prep.cfg, prepared=prep, run_name=f"{cfg.name}-learning-bench")
        ev = evaluate_prepared(prep, res.checkpoint_dir, res.run_id)
    return prep, {"mlflow_run_id": res.run_id, "checkpoint": str(res.checkpoint_dir),
                  "val_loss": res.metrics.get("val_loss"), "metrics": ev["metrics"]}, \
        Path(res.checkpoint_dir).parent / "eval"


def _patients(root: Path, table: str) -> dict[int, Hashable]:
    """sample id -> patient(s) from a shard folder (``records``: ecg_id/patient_id; ``qa``:
    sample_id/patient_ids)."""
    ds = pads.dataset(str(root / table), format="parquet")
    cols = ["ecg_id", "patient_id"] if table == "records" else ["sample_id", "patient_ids"]
    got = ds.to_table(columns=cols).to_pydict()
    ids, pats = got[cols[0]], got[cols[1]]
    return {int(i): (tuple(p) if isinstance(p, list) else p) for i, p in zip(ids, pats)}


def stage_classify(out: Path, encoder: str, steps: int, n_boot: int,
                   extra: Sequence[str]) -> dict[str, Any]:
    cfg = _cfg("classify_ptbxl", out, [f"encoder.checkpoint={encoder}",
                                       f"train.max_steps={steps}",
                                       f"train.eval_every={max(steps // 3, 1)}",
                                       "evaluation.baselines=true", *extra])
    prep, info, eval_dir = _train_and_evaluate(cfg)
    table = json.loads((eval_dir / "predictions.json").read_text())
    pat = _patients(prep.shards.root, "records")
    return {**info, **classify_stats(table, list(prep.cfg.targets.classes), pat, n_boot)}


def classify_stats(table: Sequence[Mapping[str, Any]], classes: Sequence[str],
                   patients: Mapping[int, Hashable], n_boot: int) -> dict[str, Any]:
    """Macro AUC of the model's label probabilities and of the label prior (both stored per
    record in the evaluation's ``predictions.json``), their paired difference and per-class
    AUCs, with patient-cluster bootstrap intervals."""
    classes = list(classes)
    y = np.array([[int(c in t["labels"]) for c in classes] for t in table])
    p_model = np.array([[t["probabilities"][c] for c in classes] for t in table])
    p_prior = np.array([[t["prior"][c] for c in classes] for t in table])
    groups = [patients.get(int(t["sample_id"]), t["sample_id"]) for t in table]

    def auc(scores: np.ndarray) -> Callable[[np.ndarray], float]:
        def f(idx: np.ndarray) -> float:
            yy = y[idx]
            if any(yy[:, c].min() == yy[:, c].max() for c in range(len(classes))):
                return float("nan")  # a class without positives (or negatives) in the resample
            return classification_metrics(yy, scores[idx], label_names=classes)["macro_auc"]
        return f

    model = bootstrap(auc(p_model), len(y), groups, n_boot)
    prior = bootstrap(auc(p_prior), len(y), groups, n_boot)
    diff = paired_difference(auc(p_model), auc(p_prior), len(y), groups, n_boot)
    per_class = {c: round(classification_metrics(y[:, [i]], p_model[:, [i]])["macro_auc"], 4)
                 for i, c in enumerate(classes) if y[:, i].min() != y[:, i].max()}
    return {"records": len(y), "patients": len(set(groups)),
            "prevalence": dict(zip(classes, np.round(y.mean(0), 3).tolist())),
            "macro_auc": model.as_json(), "prior_auc": prior.as_json(),
            "auc_minus_prior": diff.as_json(), "auc_per_class": per_class,
            "undefined_resamples": model.n_undefined}


def stage_qa(out: Path, encoder: str, steps: int, n_boot: int,
             extra: Sequence[str]) -> dict[str, Any]:
    cfg = _cfg("quickstart", out, [f"encoder.checkpoint={encoder}", f"train.max_steps={steps}",
                                   f"train.eval_every={max(steps // 3, 1)}",
                                   "evaluation.baselines=true", *extra])
    prep, info, eval_dir = _train_and_evaluate(cfg)
    systems = {name: json.loads((eval_dir / f"predictions{suffix}.json").read_text())
               for name, suffix in (("model", ""), ("majority", "_majority"),
                                    ("blind", "_blind"))}
    pat = _patients(prep.shards.root, "qa")
    return {**info, **qa_stats(systems, pat, n_boot)}


def qa_stats(systems: Mapping[str, Sequence[Mapping[str, Any]]],
             patients: Mapping[int, Hashable], n_boot: int) -> dict[str, Any]:
    """Exact match per question type (and ``overall``) of ``model``, ``majority`` and
    ``blind`` (their ``predictions*.json``, item for item in the same order), with
    patient-cluster bootstrap intervals and paired differences against both baselines."""
    order = [p["sample_id"] for p in systems["model"]]
    for name, preds in systems.items():
        if [p["sample_id"] for p in preds] != order:
            raise RuntimeError(f"learning.py: {name} predictions are not in the model's order")
    types = sorted({p["question_type"] for p in systems["model"]})
    result: dict[str, Any] = {"items": len(order), "by_type": {}}
    for qtype in ["overall", *types]:
        sel = [i for i, p in enumerate(systems["model"])
               if qtype == "overall" or p["question_type"] == qtype]
        groups = [patients.get(int(order[i]), order[i]) for i in sel]
        correct = {name: np.array([float(bool(preds[i]["correct"])) for i in sel])
                   for name, preds in systems.items()}

        def mean(name: str) -> Callable[[np.ndarray], float]:
            return lambda idx: float(correct[name][idx].mean())

        row: dict[str, Any] = {"items": len(sel), "patients": len(set(groups))}
        for name in systems:
            row[name] = bootstrap(mean(name), len(sel), groups, n_boot).as_json()
        for base in ("majority", "blind"):
            row[f"model_minus_{base}"] = paired_difference(mean("model"), mean(base), len(sel),
                                                           groups, n_boot).as_json()
        result["by_type"][qtype] = row
    result["verify_auc"] = verify_auc_stats(systems["model"], patients, n_boot)
    return result


def verify_auc_stats(preds: Sequence[Mapping[str, Any]], patients: Mapping[int, Hashable],
                     n_boot: int) -> dict[str, Any] | None:
    """ROC AUC of the model's ``P(yes)`` on the verify items (``p_yes`` in
    ``predictions.json``) against their gold yes/no, with its interval: above 0.5 means the
    model ranks the "yes" items higher, even where its greedy answer is always "no"."""
    scored = [p for p in preds if p.get("p_yes") is not None and p["gold"] in (["yes"], ["no"])]
    if not scored:
        return None
    y = np.array([p["gold"] == ["yes"] for p in scored])
    s = np.array([float(p["p_yes"]) for p in scored])
    groups = [patients.get(int(p["sample_id"]), p["sample_id"]) for p in scored]

    def auc(idx: np.ndarray) -> float:
        yy = y[idx]
        if yy.min() == yy.max():
            return float("nan")
        return binary_auc(yy, s[idx])

    return {**bootstrap(auc, len(y), groups, n_boot).as_json(), "patients": len(set(groups)),
            "positives": int(y.sum())}


def headline(res: Mapping[str, Any], seconds: Mapping[str, float], args: Any) -> dict[str, Any]:
    cl, qa, pre = res["classify"], res["qa"], res["pretrain"]

    def pair(iv: Mapping[str, Any]) -> tuple[float, list[float]]:
        return iv["value"], iv["ci95"]

    head: dict[str, Any] = {"benchmark": "learning", "quick": bool(args.quick)}
    zs = pre["zeroshot"]
    head["pretrain_zeroshot_macro_auc"] = zs.get("zeroshot/test/macro_auc",
                                                 zs.get("zeroshot/valid/macro_auc"))
    head["classify_macro_auc"], head["classify_macro_auc_ci95"] = pair(cl["macro_auc"])
    head["classify_prior_auc"], head["classify_prior_auc_ci95"] = pair(cl["prior_auc"])
    head["classify_auc_minus_prior_ci95"] = cl["auc_minus_prior"]["ci95"]
    head["classify_auc_per_class"] = cl["auc_per_class"]
    for key, name in (("qa_em", "model"), ("qa_majority_em", "majority"),
                      ("qa_blind_em", "blind")):
        head[key] = {t: r[name]["value"] for t, r in qa["by_type"].items()}
        head[f"{key}_ci95"] = {t: r[name]["ci95"] for t, r in qa["by_type"].items()}
    head["qa_em_minus_majority_ci95"] = {t: r["model_minus_majority"]["ci95"]
                                         for t, r in qa["by_type"].items()}
    head["qa_items"] = {t: r["items"] for t, r in qa["by_type"].items()}
    verify = qa.get("verify_auc")
    head["qa_verify_auc"] = verify["value"] if verify else None
    head["qa_verify_auc_ci95"] = verify["ci95"] if verify else None
    sv = qa["by_type"].get("single-verify")
    head["goals"] = {
        "classify_auc_ge_0.75": cl["macro_auc"]["value"] >= GOAL_CLASSIFY_AUC,
        "classify_ci_above_prior": cl["auc_minus_prior"]["ci95"][0] > 0,
        "qa_single_verify_above_majority": (sv is not None and sv["model"]["value"]
                                            > sv["majority"]["value"]),
        "qa_single_verify_ci_above_majority": (sv is not None and
                                               sv["model_minus_majority"]["ci95"][0] > 0),
        "qa_verify_auc_ci_above_0.5": bool(verify and verify["ci95"][0] > 0.5),
    }
    head["steps"] = {"pretrain_epochs": args.pretrain_epochs,
                     "classify_steps": args.classify_steps, "qa_steps": args.qa_steps}
    head["overrides"] = {s: getattr(args, f"{s}_set") for s in STAGES if getattr(args, f"{s}_set")}
    head["mlflow_runs"] = {"pretrain": pre["mlflow_run_id"], "classify": cl["mlflow_run_id"],
                           "qa": qa["mlflow_run_id"]}
    head["stage_seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    head["total_seconds"] = round(sum(seconds.values()), 1)
    return head


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few steps per stage (smoke run)")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / LEARNING_JSON.parent,
                    help="result folder (default runs/bench-learning, where make demo looks)")
    ap.add_argument("--pretrain-epochs", type=int)
    ap.add_argument("--classify-steps", type=int)
    ap.add_argument("--qa-steps", type=int)
    for stage in STAGES:
        ap.add_argument(f"--{stage}-set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"extra config override for the {stage} stage (repeatable)")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--reuse", action="store_true", help="keep stages already in --out")
    args = ap.parse_args(argv)
    base = QUICK if args.quick else FULL
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for stage in STAGES:
        setattr(args, f"{stage}_set", [*STAGE_SET[stage], *getattr(args, f"{stage}_set")])
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "pretrain": lambda: stage_pretrain(out, args.pretrain_epochs, args.pretrain_set),
        "classify": lambda: stage_classify(out, results["pretrain"]["encoder_path"],
                                           args.classify_steps, args.n_boot, args.classify_set),
        "qa": lambda: stage_qa(out, results["pretrain"]["encoder_path"], args.qa_steps,
                               args.n_boot, args.qa_set),
    }
    for stage in STAGES:
        saved = out / f"{stage}.json"
        if args.reuse and saved.exists():
            results[stage] = json.loads(saved.read_text())
            seconds[stage] = float(results[stage].get("seconds", 0.0))
            print(f"[learning] {stage}: reused {saved}", flush=True)
            continue
        print(f"\n[learning] === {stage} ===", flush=True)
        t0 = time.perf_counter()
        results[stage] = runs[stage]()
        seconds[stage] = time.perf_counter() - t0
        results[stage]["seconds"] = seconds[stage]
        saved.write_text(json.dumps(results[stage], indent=1, default=str))
        print(f"[learning] {stage} done in {seconds[stage]:.0f} s -> {saved}", flush=True)
    head = headline(results, seconds, args)
    (out / "learning.json").write_text(json.dumps(head, indent=1))
    print(json.dumps(head))
    return 0


if __name__ == "__main__":
    sys.exit(main())
