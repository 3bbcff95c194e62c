"""Config loading: every shipped YAML, dotted overrides, typed errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecglm.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    dump_yaml,
    flatten,
    from_dict,
    load_config,
)
from ecglm.config.paths import resolve_paths

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "jobs" / "configs").glob("*.yaml")) + sorted(
    (REPO / "serve").glob("*.yaml"))


def test_configs_are_shipped() -> None:
    names = {p.name for p in SHIPPED}
    assert {"quickstart.yaml", "tiny.yaml"} <= names


@pytest.mark.parametrize("path", [p for p in SHIPPED if p.parent.name == "configs"],
                         ids=lambda p: p.name)
def test_every_shipped_experiment_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)
    # round trip: dump -> load gives the same tree
    assert from_dict(__import__("yaml").safe_load(dump_yaml(cfg))) == cfg
    # every tune key is a real dotted key
    flat = flatten(cfg)
    for key in cfg.tune.search_space:
        assert key in flat


def test_serve_config_loads(repo_root: Path) -> None:
    import yaml

    data = yaml.safe_load((repo_root / "serve" / "serve_config.yaml").read_text())
    app = data["applications"][0]
    assert app["import_path"] == "serve.app:build_app"
    cfg = load_config(repo_root / app["args"]["config"])
    assert cfg.serve.host == "127.0.0.1"


def test_dotted_overrides_are_typed() -> None:
    cfg = load_config(REPO / "jobs/configs/quickstart.yaml",
                      ["train.max_steps=7", "lora.r=16", "train.lr=1e-3",
                       "lora.target_modules=[q_proj,k_proj]", "evaluation.max_items=null"])
    assert cfg.train.max_steps == 7 and cfg.lora.r == 16
    assert cfg.train.lr == pytest.approx(1e-3) and isinstance(cfg.train.lr, float)
    assert cfg.lora.target_modules == ["q_proj", "k_proj"]
    assert cfg.evaluation.max_items is None


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["train.max_stepz=3"], "train.max_stepz"),
        (["train.max_steps=abc"], "train.max_steps"),
        (["train.max_steps=2.5"], "train.max_steps"),
        (["train.strategy=fsdp"], "train.strategy"),
        (["train.zero_stage=4"], "train.zero_stage"),
        (["nosuch.key=1"], "nosuch"),
        (["lora.r=0"], "lora.r"),
        (["data.test_fraction=0.95"], "data.test_fraction"),
        (["llm.source=path"], "llm.path"),
        (["tune.search_space={lora.r: []}"], "tune.search_space.lora.r"),
        (["train.max_steps"], "train.max_steps"),
    ],
)
def test_bad_values_name_the_dotted_key(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(REPO / "jobs/configs/tiny.yaml", overrides)
    assert str(exc.value).startswith(key), str(exc.value)


def test_unknown_nested_yaml_key(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("encoder:\n  d_modle: 12\n")
    with pytest.raises(ConfigError, match=r"^encoder\.d_modle: unknown key"):
        load_config(p)


def test_flatten_gives_mlflow_params_and_tune_keys() -> None:
    cfg = ExperimentConfig()
    flat = flatten(cfg)
    assert flat["train.max_steps"] == cfg.train.max_steps
    assert flat["llm.tiny.hidden_size"] == cfg.llm.tiny.hidden_size
    assert isinstance(flat["tune.search_space"], dict)
    # every flattened key is accepted back as an override
    for key, value in flat.items():
        assert apply_overrides(cfg, {key: value}) == cfg


def test_resolve_paths_makes_everything_absolute(tmp_path: Path) -> None:
    cfg = resolve_paths(ExperimentConfig(), tmp_path)
    assert Path(cfg.data.shard_dir).is_absolute() and cfg.data.shard_dir.startswith(str(tmp_path))
    assert cfg.tracking.tracking_uri == f"sqlite:///{tmp_path}/.cache/mlflow/mlflow.db"
    assert resolve_paths(cfg, tmp_path / "elsewhere") == cfg  # idempotent


def test_cli_reports_config_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from ecglm.cli import main

    code = main(["data", "shard", str(REPO / "jobs/configs/tiny.yaml"), "train.batch_size=-1"])
    assert code == 2
    assert "train.batch_size" in capsys.readouterr().err


def test_cluster_yaml_is_a_consistent_launcher_config(repo_root: Path) -> None:
    import yaml

    data = yaml.safe_load((repo_root / "cluster.yaml").read_text())
    types = data["available_node_types"]
    assert data["head_node_type"] in types
    assert {"cpu_worker", "gpu_worker"} <= set(types)
    assert sum(t.get("max_workers", 0) for t in types.values()) <= data["max_workers"]
    assert "~/ecglm" in data["file_mounts"]
    # the dashboard and the head's services stay on loopback unless the operator opens them
    assert any("--dashboard-host=127.0.0.1" in c for c in data["head_start_ray_commands"])


def test_qa_training_refuses_record_only_datasets(tmp_path: Path) -> None:
    from ecglm.train.run import prepare

    cfg = load_config(REPO / "jobs/configs/quickstart.yaml",
                      ["data.dataset=ludb", "data.source=shared", f"output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"^data\.dataset: QA training"):
        prepare(cfg)


def test_cli_overrides_may_follow_options(capsys: pytest.CaptureFixture[str]) -> None:
    from ecglm.cli import build_parser, main

    # a bad override after --checkpoint is still parsed as an override (and named)
    code = main(["eval", str(REPO / "jobs/configs/tiny.yaml"), "--checkpoint", "x",
                 "train.max_steps=abc"])
    assert code == 2 and "train.max_steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", str(REPO / "jobs/configs/tiny.yaml"), "--checkpoint", "x", "--nope"])
    assert build_parser()  # parser builds without side effects
