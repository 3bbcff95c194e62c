"""``ecglm`` command line: ``ecglm <command> CONFIG [dotted.key=value ...]``.

Commands: ``train`` (train + evaluate), ``eval``, ``eval-expertqa``, ``tune``, ``pretrain``,
``export``, ``data shard``, ``data check``, ``serve``, ``demo``. ``--tiny`` shrinks any preset.
Bad configs exit with status 2 and a message naming the dotted key.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from ecglm.config import ConfigError, ExperimentConfig, load_config


def _load(args: argparse.Namespace) -> ExperimentConfig:
    return load_config(args.config, args.overrides, tiny=bool(getattr(args, "tiny", False)))


def _cmd_train(args: argparse.Namespace) -> int:
    from ecglm.workflows import train_and_evaluate

    out = train_and_evaluate(_load(args), evaluate=not args.no_eval)
    print(json.dumps(out, indent=2))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from ecglm.workflows import evaluate_checkpoint

    print(json.dumps(evaluate_checkpoint(_load(args), args.checkpoint), indent=2))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ecglm.checkpoint import resolve_checkpoint
    from ecglm.models.from_checkpoint import load_model
    from ecglm.models.export import export_merged

    cfg = _load(args)
    folder, run_id = resolve_checkpoint(cfg, args.checkpoint)
    out = export_merged(load_model(cfg, folder), args.out, in_place=True)
    print(json.dumps({"checkpoint": str(folder), "mlflow_run_id": run_id, "out": str(out)},
                     indent=2))
    return 0


def _cmd_eval_expertqa(args: argparse.Namespace) -> int:
    from ecglm.data.expertqa import load_expert_qa
    from ecglm.evaluation.expertqa import (attach_predictions, load_predictions,
                                           reference_rows, score_expert_qa)
    from ecglm.evaluation.judging import build_judge

    cfg = _load(args)
    try:
        rows, missing = attach_predictions(reference_rows(load_expert_qa(args.data)),
                                           load_predictions(args.predictions))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    judge, judge_error = None, None
    try:
        judge = build_judge(cfg.evaluation.judge, cfg.evaluation.judge_model_path)
    except Exception as exc:  # recorded in the output, text metrics still computed
        judge_error = f"{type(exc).__name__}: {exc}"
    metrics = score_expert_qa(rows, judge=judge)
    print(json.dumps({"data": str(args.data), "predictions": str(args.predictions),
                      "n_rows": len(rows), "n_missing": len(missing),
                      "missing": missing[:20], "judge": cfg.evaluation.judge,
                      "judge_error": judge_error, "metrics": metrics}, indent=2))
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from ecglm.tuning.sweep import run_sweep

    res = run_sweep(_load(args))
    print(json.dumps({"best": res.best_overrides, "best_metric": res.best_metric,
                      "best_mlflow_run_id": res.best_mlflow_run_id,
                      "sweep_mlflow_run_id": res.parent_run_id, "trials": res.table}, indent=2))
    return 0


def _cmd_shard(args: argparse.Namespace) -> int:
    from ecglm.config.paths import resolve_paths
    from ecglm.data.shards import build_shards
    from ecglm.utils.ray_env import init_ray

    cfg = resolve_paths(_load(args))
    init_ray(cfg.train.ray_num_cpus)
    shards = build_shards(cfg)
    print(json.dumps({"root": str(shards.root), **shards.manifest}, indent=2, default=str))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from ecglm.config import apply_overrides, parse_cli_overrides
    from ecglm.data.check import run_check

    cfg = (load_config(args.config, args.set) if args.config
           else apply_overrides(ExperimentConfig(), parse_cli_overrides(args.set)))
    fs = args.fs or cfg.data.fs
    seconds = args.seconds or cfg.data.seconds
    print(run_check(args.paths, cfg.data.normalize, fs, int(round(fs * seconds))), flush=True)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from ecglm.workflows import serve_forever

    serve_forever(_load(args), args.checkpoint)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ecglm.workflows import run_demo

    run_demo(_load(args))
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from ecglm.pretrain.data import PretrainDataError
    from ecglm.pretrain.run import run_pretraining

    try:
        res = run_pretraining(_load(args))
    except PretrainDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"mlflow_run_id": res.run_id, "encoder_path": str(res.encoder_path),
                      "output_dir": str(res.output_dir), "metrics": res.metrics}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ecglm", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn, help_: str, parent=sub) -> argparse.ArgumentParser:
        sp = parent.add_parser(name, help=help_)
        sp.add_argument("config", type=Path, help="experiment YAML (jobs/configs/*.yaml)")
        sp.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
        sp.add_argument("--tiny", action="store_true",
                        help="shrink the preset to CPU/test size (same architecture; dotted "
                             "overrides apply after)")
        sp.set_defaults(fn=fn)
        return sp

    add("train", _cmd_train, "train with Ray Train, then evaluate").add_argument(
        "--no-eval", action="store_true", help="skip evaluation after training")
    add("eval", _cmd_eval, "evaluate a checkpoint (path or MLflow run id)").add_argument(
        "--checkpoint", required=True)
    exp = add("export", _cmd_export, "merge LoRA into the LLM and write a peft-free folder "
              "(merged LLM + tokenizer, ECG-side weights, config)")
    exp.add_argument("--checkpoint", required=True, help="checkpoint folder or MLflow run id")
    exp.add_argument("--out", type=Path, required=True, help="output folder")
    xqa = add("eval-expertqa", _cmd_eval_expertqa,
              "score ECG-Expert-QA predictions per task (BLEU-1/ROUGE-L/METEOR, optional "
              "judge from evaluation.judge)")
    xqa.add_argument("--data", type=Path, required=True,
                     help="ECG-Expert-QA JSON file or folder of per-task JSON files")
    xqa.add_argument("--predictions", type=Path, required=True,
                     help="JSON/JSONL [{item_id: '<task>:<index>', turn, prediction}] or "
                          "{item_id: answer | [answer per turn]}")
    add("tune", _cmd_tune, "Ray Tune sweep over tune.search_space")
    add("serve", _cmd_serve, "serve a checkpoint with Ray Serve until Ctrl-C").add_argument(
        "--checkpoint", required=True)
    add("demo", _cmd_demo, "shard, train, evaluate, sweep and serve one request")
    add("pretrain", _cmd_pretrain, "contrastive ECG<->text (SigLIP) pretraining of the "
        "encoder with Ray Train, then zero-shot superclass AUC")
    data = sub.add_parser("data", help="data commands").add_subparsers(dest="data_cmd",
                                                                       required=True)
    add("shard", _cmd_shard, "write Parquet shards with Ray Data", parent=data)
    chk = data.add_parser("check", help="validate records/folders; last line: JSON counts")
    chk.add_argument("paths", nargs="+", help="records (extension optional) or folders")
    chk.add_argument("--config", type=Path, default=None,
                     help="experiment YAML whose data.normalize/fs/seconds apply "
                          "(default: the built-in defaults)")
    chk.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                     help="dotted overrides, e.g. data.normalize.missing_leads=mask")
    chk.add_argument("--fs", type=int, default=None, help="target rate in Hz (default data.fs)")
    chk.add_argument("--seconds", type=float, default=None,
                     help="target length in s (default data.seconds)")
    chk.set_defaults(fn=_cmd_check)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    # dotted overrides may also follow options (`eval CFG --checkpoint X key=value`)
    args, extra = parser.parse_known_args(argv)
    stray = [x for x in extra if x.startswith("-") or "=" not in x]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        return int(args.fn(args) or 0)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
