"""Make every path in a config absolute so Ray workers (other cwd, other nodes) see the same
files, and leave storage URIs alone.

Ray workers never run in the driver's working directory (a Ray job's working dir, a worker
node's session folder), so :func:`resolve_paths` turns every relative path of a config into an
absolute one against the driver's cwd, once, before anything is handed to a worker. Keys that
may name remote storage (:data:`URI_KEYS`: ``train.storage_path``, ``tracking.artifact_root``)
keep a URI such as ``file:///mnt/shared/ray``, ``s3://bucket/ray`` or ``gs://bucket/ray``
untouched: Ray Train opens ``train.storage_path`` through pyarrow's filesystems and MLflow the
artifact root through its own stores. The other paths are local folders; on a cluster they
must be on storage every node mounts at the same path (shards, LLM cache, outputs).
"""

from __future__ import annotations

import re
from pathlib import Path

from ecglm.config.checks import ConfigError
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
URI_KEYS = frozenset({"train.storage_path", "tracking.artifact_root"})
"""Keys of :data:`PATH_KEYS` that may also hold a URI (kept as given)."""
OPTIONAL_PATH_KEYS = (
    "data.mimic_root",
    "encoder.checkpoint",
    "pretrain.text_model_path",
    "evaluation.transfer_root",
    "train.nvme_path",
)
"""Optional local paths (None/empty: unused), made absolute when set."""
EXISTING_PATH_KEYS = (
    "llm.path",
    "encoder.image.path",
    "evaluation.bertscore_model",
    "evaluation.judge_model_path",
    "train.resume_from",
)
"""Keys that hold a local folder *or* something else (a model name, an MLflow run id): made
absolute only when the relative path exists under the base folder."""
WRITTEN_KEYS = ("output_dir", "data.synthetic_root", "data.shard_dir", "llm.cache_dir",
                "tracking.artifact_root", "train.storage_path")
"""Keys of folders a run writes (must outlive the driver and be seen by every node)."""
SQLITE_PREFIX = "sqlite:///"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


def is_uri(value: str) -> bool:
    """True for ``scheme://...`` (``file://``, ``s3://``, ``gs://``, ``hdfs://``...)."""
    return bool(_URI.match(value))


def in_ray_job_copy(folder: Path) -> bool:
    """True inside the copy Ray makes of a job's ``--working-dir``
    (``<ray temp>/session_*/runtime_resources/working_dir_files/_ray_pkg_*``): garbage-collected
    when the job ends and present on the driver's node only."""
    return "runtime_resources" in folder.parts and any(
        part.startswith("_ray_pkg_") for part in folder.parts)


def _relative_written(cfg: ExperimentConfig) -> list[str]:
    """Keys of :data:`WRITTEN_KEYS` (and a sqlite tracking store) given as relative paths."""
    keys = [key for key in WRITTEN_KEYS
            if not is_uri(str(_get(cfg, key))) and not Path(str(_get(cfg, key))).is_absolute()]
    uri = cfg.tracking.tracking_uri
    if uri.startswith(SQLITE_PREFIX) and not uri.startswith(SQLITE_PREFIX + "/"):
        keys.append("tracking.tracking_uri")
    return keys


def _abs(path: str, base: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _get(cfg: ExperimentConfig, key: str) -> object:
    obj: object = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def resolve_paths(cfg: ExperimentConfig, base: Path | None = None) -> ExperimentConfig:
    """Return ``cfg`` with every local path made absolute against ``base`` (default: cwd).

    * :data:`PATH_KEYS` always; a URI is kept as given for :data:`URI_KEYS` and refused for
      the others;
    * :data:`OPTIONAL_PATH_KEYS` when set;
    * :data:`EXISTING_PATH_KEYS` when ``base/<value>`` exists (otherwise a hub model name, an
      MLflow run id or an absolute path: kept);
    * a ``sqlite:///relative.db`` tracking URI (its folder is created) and a plain relative
      tracking folder (MLflow's file store: holds a ``/`` or exists under ``base``).

    Idempotent: resolving an already resolved config changes nothing.

    Raises:
        ConfigError: a URI in a key that must be a local folder (names the key); relative
            output folders while ``base`` is Ray's copy of a job's working dir
            (:func:`in_ray_job_copy`: results would be deleted with it, names the keys).
    """
    base = (base or Path.cwd()).resolve()
    relative = _relative_written(cfg)
    if relative and in_ray_job_copy(base):
        raise ConfigError(
            f"{', '.join(relative)}: relative paths would resolve inside Ray's temporary copy "
            f"of the job's working dir ({base}), deleted when the job ends and not seen by "
            "other nodes; give absolute paths on shared storage (or URIs for "
            "train.storage_path / tracking.artifact_root)")
    overrides: dict[str, str] = {}
    for key in PATH_KEYS:
        value = str(_get(cfg, key))
        if is_uri(value):
            if key not in URI_KEYS:
                raise ConfigError(f"{key}: {value!r} is a URI; this key needs a local folder "
                                  "(on a cluster: a path every node mounts)")
            continue
        overrides[key] = _abs(value, base)
    for key in OPTIONAL_PATH_KEYS:
        value = _get(cfg, key)
        if value:
            overrides[key] = _abs(str(value), base)
    for key in EXISTING_PATH_KEYS:
        value = _get(cfg, key)
        if value and not is_uri(str(value)) and (base / str(value)).exists():
            overrides[key] = _abs(str(value), base)
    uri = cfg.tracking.tracking_uri
    if uri.startswith(SQLITE_PREFIX) and not uri.startswith(SQLITE_PREFIX + "/"):
        db = Path(_abs(uri[len(SQLITE_PREFIX):], base))
        db.parent.mkdir(parents=True, exist_ok=True)
        overrides["tracking.tracking_uri"] = SQLITE_PREFIX + str(db)
    elif uri and not _SCHEME.match(uri) and ("/" in uri or (base / uri).exists()):
        # a plain folder: MLflow's file store ("databricks" and other bare names are kept)
        overrides["tracking.tracking_uri"] = _abs(uri, base)
    return apply_overrides(cfg, overrides)
