"""``ecglm`` command line: ``ecglm <command> CONFIG [dotted.key=value ...]``.

Argument parsing only: each command runs one recipe (:mod:`ecglm.recipes`).

Commands: ``train`` (train + evaluate), ``eval``, ``eval-expertqa``, ``tune``, ``pretrain``,
``export``, ``data shard``, ``data check``, ``serve``, ``demo``, ``plan`` (memory plan, no
Ray), ``register`` (Model Registry); ``submit`` (any of them as a Ray job on a cluster) and
``jobs`` (list/status/logs/stop). ``--tiny`` shrinks any preset.
Bad configs exit with status 2 and a message naming the dotted key. ``-v`` (before the
command) shows Ray's and the libraries' logs on the terminal; by default they go to
``<output_dir>/<name>/logs/`` (see :mod:`ecglm.utils.logs`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any, Optional, Sequence

from ecglm.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    load_config,
    parse_cli_overrides,
)
from ecglm.utils.logs import log_file, quiet_output
from ecglm.tracking.tracked import Interrupted

DEFAULT_TRACKING = ExperimentConfig().tracking.tracking_uri
"""Registry ``ecglm serve models:/...`` reads without ``--tracking-uri``/``MLFLOW_TRACKING_URI``
(the store ``make demo`` writes)."""


def _recipe(name: str) -> ModuleType:
    """The recipe module of a command, imported when the command runs: recipes pull in torch,
    Ray, transformers and MLflow (seconds of start-up), which ``--help`` and argument errors
    should not pay for."""
    return importlib.import_module(f"ecglm.recipes.{name}")


def _load(args: argparse.Namespace) -> ExperimentConfig:
    return load_config(args.config, args.overrides, tiny=bool(getattr(args, "tiny", False)))


def _print(data: Any) -> int:
    print(json.dumps(data, indent=2, default=str))
    return 0


def _train_config(args: argparse.Namespace) -> ExperimentConfig:
    """The config of ``ecglm train``; ``--resume REF`` sets ``train.resume_from``."""
    cfg = _load(args)
    if args.resume:
        cfg = replace(cfg, train=replace(cfg.train, resume_from=str(args.resume)))
    return cfg


def _cmd_train(args: argparse.Namespace) -> int:
    return _print(_recipe("train").run(_train_config(args), evaluate=not args.no_eval))


def _cmd_eval(args: argparse.Namespace) -> int:
    return _print(_recipe("evaluate").run(_load(args), args.checkpoint))


def _cmd_export(args: argparse.Namespace) -> int:
    return _print(_recipe("export").run(_load(args), args.checkpoint, args.out))


def _cmd_eval_expertqa(args: argparse.Namespace) -> int:
    try:
        out = _recipe("expertqa").run(_load(args), args.data, args.predictions)
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _print(out)


def _cmd_tune(args: argparse.Namespace) -> int:
    return _print(_recipe("tune").run(_load(args), resume=args.resume))


def _cmd_shard(args: argparse.Namespace) -> int:
    return _print(_recipe("shard").run(_load(args)))


def _cmd_check(args: argparse.Namespace) -> int:
    cfg = (load_config(args.config, args.set) if args.config
           else apply_overrides(ExperimentConfig(), parse_cli_overrides(args.set)))
    try:
        report = _recipe("check").run(cfg, args.paths, args.fs, args.seconds,
                                      workers=args.workers, progress=args.progress,
                                      max_record_seconds=args.max_record_seconds,
                                      fs_limits=args.fs_limits)
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report, flush=True)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    if str(args.config).startswith("models:"):  # ecglm serve models:/NAME@ALIAS
        uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING
        _recipe("serve").run_registered(str(args.config), uri, args.overrides)
        return 0
    if not args.checkpoint:
        raise SystemExit("ecglm serve CONFIG needs --checkpoint (or: ecglm serve "
                         "models:/NAME@ALIAS)")
    _recipe("serve").run(_load(args), args.checkpoint)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    _recipe("demo").run(_load(args))
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    recipe = _recipe("pretrain")
    try:
        out = recipe.run(_load(args))
    except recipe.PretrainDataError as exc:  # no record with text, batch does not fit
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _print(out)


def _cmd_plan(args: argparse.Namespace) -> int:
    recipe = _recipe("plan")
    cfg = _load(args)
    hardware = recipe.hardware_of(cfg, args.nodes, args.gpus_per_node, args.gpu_mem_gib,
                                  args.cpu_mem_gib)
    text, data = recipe.run(cfg, hardware, args.model)
    print(text)
    if args.json:
        print(json.dumps(data, default=str), flush=True)  # one line, last
    return 0


# --- register (MLflow Model Registry) -----------------------------------------------------------

def _cmd_register(args: argparse.Namespace) -> int:
    """``ecglm register RUN_ID --name NAME [--alias A] (--tracking-uri URI | --config CFG)``."""
    recipe = _recipe("register")
    if args.tracking_uri:
        uri, work = args.tracking_uri, Path(".cache") / "downloads"
    else:
        from ecglm.config.paths import resolve_paths

        cfg = resolve_paths(load_config(args.config, args.set))
        uri, work = cfg.tracking.tracking_uri, Path(cfg.output_dir) / "downloads"
    from mlflow.exceptions import MlflowException  # deferred on purpose (see _recipe)

    try:
        return _print(recipe.run(uri, args.run_id, args.name, args.alias, work))
    except MlflowException as exc:  # unknown run, unreachable server...
        print(f"error: MLflow ({uri}): {exc.message}", file=sys.stderr)
        return 2
    except ValueError as exc:  # RegistryRefError: bad name/alias
        if isinstance(exc, ConfigError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _add_register(sub: Any) -> None:
    reg = sub.add_parser("register", help="register a training run's model (MLflow pyfunc) "
                         "as a new version in the Model Registry")
    reg.add_argument("run_id", help="MLflow run id of a training run (or a sweep's best run)")
    reg.add_argument("--name", required=True, help="registered model name")
    reg.add_argument("--alias", default=None,
                     help="alias pointed at the new version (e.g. champion), for "
                          "models:/NAME@ALIAS")
    where = reg.add_mutually_exclusive_group(required=True)
    where.add_argument("--tracking-uri", default=None,
                       help="MLflow tracking URI (sqlite:///... or http://host:port)")
    where.add_argument("--config", type=Path, default=None,
                       help="experiment YAML whose tracking.tracking_uri is used")
    reg.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                     help="dotted overrides of --config")
    reg.set_defaults(fn=_cmd_register)

# --- end register ---------------------------------------------------------------------------------


_RAY_COMMANDS = frozenset({"train", "eval", "tune", "serve", "demo", "pretrain", "data shard"})
"""Commands that start Ray: their Ray and library logs go to a log file unless ``-v``."""


def _log_file(args: argparse.Namespace) -> Optional[Path]:
    """The log file of a command that starts Ray (None otherwise, or when the config does not
    load: the command itself then reports the error)."""
    command = " ".join(x for x in (args.command, getattr(args, "data_cmd", None)) if x)
    if command not in _RAY_COMMANDS:
        return None
    try:
        cfg = _load(args)
    except (ConfigError, OSError, ValueError):
        return None
    return log_file(cfg.output_dir, cfg.name, command)


# --- cluster: `ecglm submit`, `ecglm jobs` (Ray job server; no torch imported) ---------------


def _cmd_submit(args: argparse.Namespace) -> int:
    from ecglm.cluster.submit import run_submit

    return run_submit(args.job_command, args.config, args.overrides, tiny=args.tiny,
                      address=args.address, follow=args.follow, no_wait=args.no_wait,
                      checkpoint=args.checkpoint, resume=args.resume, no_eval=args.no_eval)


def _cmd_jobs(args: argparse.Namespace) -> int:
    from ecglm.cluster.submit import jobs_command

    return jobs_command(args.jobs_cmd, getattr(args, "job_id", None), args.address,
                        follow=bool(getattr(args, "follow", False)))


def run_job(command: Sequence[str], args: Sequence[str]) -> int:
    """What a submitted job runs (``jobs/<command>.py``): ``ecglm <command> <args>``, reading
    the config from the job's env when ``args[0]`` is
    :data:`ecglm.cluster.runtime.CONFIG_FROM_ENV` (``ecglm submit`` sends a config file that
    is not in the uploaded repo that way; it is written to a temporary file for the run).
    The first line names the ``ecglm`` code the job imports (Ray's copy of the repo)."""
    import os
    import tempfile

    import ecglm
    from ecglm.cluster.runtime import CONFIG_ENV, CONFIG_FROM_ENV, CONFIG_NAME_ENV

    print(f"[ecglm] code: {Path(ecglm.__file__).parent} ({sys.executable})", flush=True)
    if not args or args[0] != CONFIG_FROM_ENV:
        return main([*command, *args])
    text = os.environ.get(CONFIG_ENV)
    if text is None:
        print(f"error: {CONFIG_FROM_ENV} given but {CONFIG_ENV} is not in the job's env",
              file=sys.stderr)
        return 2
    name = Path(os.environ.get(CONFIG_NAME_ENV) or "config.yaml").name
    with tempfile.TemporaryDirectory(prefix="ecglm-config-") as tmp:
        (Path(tmp) / name).write_text(text)
        return main([*command, str(Path(tmp) / name), *args[1:]])


def _add_cluster_commands(sub: Any) -> None:
    """``submit`` and ``jobs`` sub-commands."""
    from ecglm.cluster.runtime import SCRIPTS

    address_help = ("Ray job server (dashboard) URL; default: cluster.address, else "
                    "RAY_ADDRESS, else http://127.0.0.1:8265")
    sm = sub.add_parser("submit", help="run a command as a Ray job on a cluster (waits for it "
                        "and exits with its status; --follow streams its logs)")
    sm.add_argument("job_command", choices=tuple(SCRIPTS), metavar="COMMAND",
                    help=f"one of {', '.join(SCRIPTS)}")
    sm.add_argument("config", type=Path, help="experiment YAML (inside or outside the repo)")
    sm.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
    sm.add_argument("--tiny", action="store_true", help="shrink the preset (as for the command)")
    sm.add_argument("--address", default=None, help=address_help)
    sm.add_argument("--follow", action="store_true", help="stream the job's logs until it ends")
    sm.add_argument("--no-wait", action="store_true",
                    help="return once submitted (serve jobs always do, unless --follow)")
    sm.add_argument("--checkpoint", default=None, help="eval/serve: checkpoint folder on shared "
                    "storage, MLflow run id or models:/NAME@ALIAS")
    sm.add_argument("--resume", default=None, help="train: run id or checkpoint folder")
    sm.add_argument("--no-eval", action="store_true", help="train: skip evaluation")
    sm.set_defaults(fn=_cmd_submit)
    jb = sub.add_parser("jobs", help="list, inspect, follow or stop submitted Ray jobs")
    jsub = jb.add_subparsers(dest="jobs_cmd", required=True)
    for name, help_ in (("list", "submitted jobs: id, status, entrypoint"),
                        ("status", "status of a job (and Ray's message once it ended)"),
                        ("logs", "logs of a job (--follow: stream until it ends, exit with "
                                 "its status)"),
                        ("stop", "stop a running job")):
        jp = jsub.add_parser(name, help=help_)
        if name != "list":
            jp.add_argument("job_id", metavar="ID", help="submission id (ecglm-...)")
        if name == "logs":
            jp.add_argument("--follow", action="store_true", help="stream until the job ends")
        jp.add_argument("--address", default=None, help=address_help)
        jp.set_defaults(fn=_cmd_jobs)


# --- end of cluster commands ---------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ecglm", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show Ray's and the libraries' logs here (default: in a log file "
                        "under <output_dir>/<name>/logs/, path printed)")
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

    tr = add("train", _cmd_train, "train with Ray Train, then evaluate")
    tr.add_argument("--no-eval", action="store_true", help="skip evaluation after training")
    tr.add_argument("--resume", metavar="RUN_ID_OR_FOLDER",
                    help="continue a run: its MLflow run id (latest resumable checkpoint) or a "
                         "checkpoint folder; sets train.resume_from")
    add("eval", _cmd_eval, "evaluate a checkpoint (folder, MLflow run id or "
        "models:/NAME@ALIAS)").add_argument(
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
    tn = add("tune", _cmd_tune, "Ray Tune sweep over tune.search_space")
    tn.add_argument("--resume", metavar="SWEEP_RUN_ID_OR_FOLDER",
                    help="continue an interrupted sweep: its parent MLflow run id or its Tune "
                         "folder (finished trials are kept, the others continue from their "
                         "latest checkpoint in their own MLflow runs)")
    srv = add("serve", _cmd_serve, "serve a checkpoint (folder, MLflow run id or "
              "models:/NAME@ALIAS) with Ray Serve until Ctrl-C; or `ecglm serve "
              "models:/NAME@ALIAS` with the registered model's own config")
    srv.add_argument("--checkpoint", default=None)
    srv.add_argument("--tracking-uri", default=None,
                     help="with models:/...: the registry (default MLFLOW_TRACKING_URI, else "
                          f"{DEFAULT_TRACKING})")
    add("demo", _cmd_demo, "shard, train, evaluate, sweep and serve one request")
    add("pretrain", _cmd_pretrain, "contrastive ECG<->text (SigLIP) pretraining of the "
        "encoder with Ray Train, then zero-shot superclass AUC")
    pln = add("plan", _cmd_plan, "memory plan per GPU and per node for ZeRO 0-3 and offload; "
              "recommends the cheapest setting that fits")
    pln.add_argument("--nodes", type=int, default=None, help="nodes (default 1)")
    pln.add_argument("--gpus-per-node", type=int, default=None,
                     help="GPUs (workers) per node (default train.num_workers)")
    pln.add_argument("--gpu-mem-gib", type=float, default=None,
                     help="GiB per GPU (default train.gpu_mem_gib, else 80)")
    pln.add_argument("--cpu-mem-gib", type=float, default=None,
                     help="host RAM per node in GiB (default: unchecked; CPU runs: this "
                          "machine's)")
    pln.add_argument("--model", default=None,
                     help="plan a built-in LLM architecture instead of the config's: "
                          "llama-1b, llama-8b, llama-70b")
    pln.add_argument("--json", action="store_true", help="print one JSON line last")
    _add_cluster_commands(sub)
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
    chk.add_argument("--workers", type=int, default=None,
                     help="reader processes (default: the CPU count; 1: no pool)")
    chk.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="progress line on stderr: files/s, MB/s, ETA (default: only when "
                          "stderr is a terminal)")
    chk.add_argument("--max-record-seconds", type=float, default=None,
                     help="reject headers declaring a longer recording (default 86400 = 24 h)")
    chk.add_argument("--fs-limits", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                     help="plausible header sampling frequencies in Hz (default 10 50000)")
    chk.set_defaults(fn=_cmd_check)
    _add_register(sub)
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
        with quiet_output(_log_file(args), verbose=args.verbose,
                          user_errors=(ConfigError, FileNotFoundError)):
            return int(args.fn(args) or 0)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 130
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
