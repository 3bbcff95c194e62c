"""Search spaces: lists and distributions parsed and validated (errors name the key), mapped
to Ray Tune domains, and loaded from a config."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray.tune.search.sample import Categorical, Float, Integer

from ecglm.config import ConfigError, ExperimentConfig, apply_overrides, load_config
from ecglm.config.search_space import parse_dimension, parse_search_space
from ecglm.tuning.space import tune_domain, tune_space


def test_lists_and_every_distribution_parse() -> None:
    dims = parse_search_space({
        "lora.r": [4, 8], "lora.alpha": {"grid": [16, 32]},
        "train.lr": {"loguniform": [1e-5, 1e-3]}, "lora.dropout": {"uniform": [0.0, 0.2]},
        "train.weight_decay": {"quniform": [0.0, 0.1, 0.01]},
        "train.warmup_ratio": {"qloguniform": [0.01, 0.1, 0.01]},
        "mapper.n_tokens": {"randint": [4, 33]}, "train.batch_size": {"lograndint": [1, 9]}})
    assert dims["lora.r"].kind == "choice" and dims["lora.r"].values == (4, 8)
    assert dims["train.lr"].probe_values() == [1e-5, 1e-3]
    assert dims["mapper.n_tokens"].probe_values() == [4, 32]  # high is exclusive
    space = tune_space(dims, "random")
    assert isinstance(space["lora.r"], Categorical)
    assert space["lora.alpha"] == {"grid_search": [16, 32]}  # grid: always every value
    assert isinstance(space["train.lr"], Float) and space["train.lr"].lower == 1e-5
    assert isinstance(space["mapper.n_tokens"], Integer)
    assert tune_domain(dims["lora.r"], "grid") == {"grid_search": [4, 8]}


@pytest.mark.parametrize("spec, message", [
    ([], "non-empty list"),
    ({"loguniform": [0.0, 1e-3]}, "low must be > 0 on a log scale"),
    ({"uniform": [0.3, 0.1]}, "low must be < high"),
    ({"randint": [1.5, 4]}, "expected an integer"),
    ({"uniform": [0, "a"]}, "expected a finite number"),
    ({"quniform": [0, 1]}, r"expected \[low, high, q\]"),
    ({"qloguniform": [1e-5, 1e-3, 0]}, "q must be > 0"),
    ({"normal": [0, 1]}, "unknown distribution 'normal'"),
    ({"choice": [1], "grid": [2]}, "expected a list of choices or a mapping"),
    (3, "expected a list of choices or a mapping"),
])
def test_bad_spaces_name_the_key(spec: object, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^tune\.search_space\.train\.lr: .*{message}"):
        parse_dimension("train.lr", spec)


def test_grid_search_refuses_distributions_and_configs_validate_on_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^tune\.search_space\.train\.lr: a loguniform .*"
                                          r"tune\.search=random"):
        apply_overrides(ExperimentConfig(), {
            "tune.search": "grid", "tune.search_space": {"train.lr": {"loguniform": [1e-5, 1e-3]}}})
    path = tmp_path / "sweep.yaml"
    path.write_text("tune:\n  search: random\n  num_samples: 4\n  search_space:\n"
                    "    train.lr: {loguniform: [1.0e-5, 1.0e-3]}\n    lora.r: {choice: [4, 8]}\n")
    cfg = load_config(path)
    assert cfg.tune.search_space["train.lr"] == {"loguniform": [1e-5, 1e-3]}
    path.write_text("tune:\n  search_space:\n    train.lr: {loguniform: [0, 1.0e-3]}\n")
    with pytest.raises(ConfigError, match=r"tune\.search_space\.train\.lr: loguniform: low"):
        load_config(path)


def test_exponent_floats_without_a_dot_in_files_and_overrides(tmp_path: Path) -> None:
    from ecglm.config.yaml_text import load_yaml

    assert load_yaml("[1e-5, -2E3, 1.0e-5, .5e1, 3, e5, 1e, 1e-5x, '1e-3']") == \
        [1e-5, -2000.0, 1e-5, 5.0, 3, "e5", "1e", "1e-5x", "1e-3"]  # quoted stays a string
    cfg = load_config(Path(__file__).parents[2] / "jobs" / "configs" / "quickstart.yaml", [
        "tune.search=random",
        "tune.search_space={train.lr: {loguniform: [1e-5, 1e-3]}, lora.r: {choice: [8, 16]}}"])
    assert cfg.tune.search_space["train.lr"] == {"loguniform": [1e-5, 1e-3]}
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 2e-4\n")
    assert load_config(path).train.lr == 2e-4
