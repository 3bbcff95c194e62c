"""Make every path in a config absolute so Ray workers (other cwd) see the same files."""

from __future__ import annotations

from pathlib import Path

from ecglm.config.loader import apply_overrides
from ecglm.config.schema import ExperimentConfig

#: Dotted keys holding filesystem paths (relative paths are taken from the current directory).
PATH_KEYS = (
    "output_dir",
    "data.shared_root",
    "data.synthetic_root",
    "data.shard_dir",
    "llm.cache_dir",
    "tracking.artifact_root",
    "train.storage_path",
)
SQLITE_PREFIX = "sqlite:///"


def _abs(path: str, base: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def resolve_paths(cfg: ExperimentConfig, base: Path | None = None) -> ExperimentConfig:
    """Return ``cfg`` with :data:`PATH_KEYS`, a local ``llm.path`` / ``encoder.image.path``,
    ``encoder.checkpoint``, ``pretrain.text_model_path`` and a sqlite ``tracking.tracking_uri``
    made absolute against ``base`` (default: cwd)."""
    base = (base or Path.cwd()).resolve()
    overrides: dict[str, str] = {}
    for key in PATH_KEYS:
        section, _, leaf = key.rpartition(".")
        obj = getattr(cfg, section) if section else cfg
        overrides[key] = _abs(getattr(obj, leaf), base)
    if cfg.llm.path and (base / cfg.llm.path).exists():
        overrides["llm.path"] = _abs(cfg.llm.path, base)
    if cfg.data.mimic_root:
        overrides["data.mimic_root"] = _abs(cfg.data.mimic_root, base)
    if cfg.encoder.checkpoint:
        overrides["encoder.checkpoint"] = _abs(cfg.encoder.checkpoint, base)
    if cfg.encoder.image.path and (base / cfg.encoder.image.path).exists():
        overrides["encoder.image.path"] = _abs(cfg.encoder.image.path, base)
    if cfg.pretrain.text_model_path:
        overrides["pretrain.text_model_path"] = _abs(cfg.pretrain.text_model_path, base)
    uri = cfg.tracking.tracking_uri
    if uri.startswith(SQLITE_PREFIX) and not uri.startswith(SQLITE_PREFIX + "/"):
        db = Path(_abs(uri[len(SQLITE_PREFIX):], base))
        db.parent.mkdir(parents=True, exist_ok=True)
        overrides["tracking.tracking_uri"] = SQLITE_PREFIX + str(db)
    return apply_overrides(cfg, overrides)
