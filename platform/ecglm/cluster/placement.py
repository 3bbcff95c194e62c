"""Check a config for cluster use and place its paths before a job is submitted.

A submitted job runs in Ray's temporary copy of the repo, possibly on another machine, so:

* every folder the job **writes** (:data:`ecglm.config.paths.WRITTEN_KEYS` and a sqlite
  tracking store) must be absolute or a URI; a relative one is placed under
  ``cluster.storage_root`` (``<storage_root>/<relative path>``) and passed to the job as a
  dotted override; without ``cluster.storage_root`` that is an error naming the keys;
* relative **read-only inputs** (``data.shared_root``, ``llm.path``, ...) are resolved against
  the submitter's current directory, with a warning that they must exist on every node;
* an ``http://127.0.0.1``/``localhost`` tracking server in a job headed to a remote cluster is
  worth a warning (right for a local head, wrong for ``ray up``).

Pure functions on :class:`~ecglm.config.ExperimentConfig`; nothing here talks to Ray.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

from ecglm.config import ConfigError, ExperimentConfig
from ecglm.config.paths import (
    EXISTING_PATH_KEYS,
    OPTIONAL_PATH_KEYS,
    SQLITE_PREFIX,
    URI_KEYS,
    WRITTEN_KEYS,
    is_uri,
)

READ_KEYS = ("data.shared_root",)
"""Always-set input folders (besides the optional and existing-path keys of
:mod:`ecglm.config.paths`)."""
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0"})


@dataclass(frozen=True)
class Placement:
    """What :func:`place_for_cluster` decided."""

    overrides: list[str] = field(default_factory=list)
    """``key=value`` overrides appended to the job's command line (absolute paths/URIs)."""
    warnings: list[str] = field(default_factory=list)
    """Human-readable warnings for the submitter (nothing is submitted differently)."""


def get_key(cfg: ExperimentConfig, key: str) -> object:
    """Value of a dotted key of ``cfg`` (``train.storage_path``)."""
    obj: object = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _under(root: str, rel: str, key: str) -> str:
    """``<root>/<rel>`` normalised (``root``: absolute folder or URI); refuses a ``rel`` that
    climbs out of ``root``."""
    parsed = urlparse(root) if is_uri(root) else None
    prefix = posixpath.normpath((parsed.path or "/") if parsed else root)
    inner = posixpath.normpath(posixpath.join(prefix, rel))
    if inner != prefix and not inner.startswith(prefix.rstrip("/") + "/"):
        raise ConfigError(f"{key}: {rel!r} climbs out of cluster.storage_root {root!r}")
    return f"{parsed.scheme}://{parsed.netloc}{inner}" if parsed else inner


def _storage_root(cfg: ExperimentConfig) -> Optional[str]:
    """``cluster.storage_root`` checked: absolute folder or URI (None when unset)."""
    root = cfg.cluster.storage_root
    if root is None or not str(root).strip():
        return None
    root = str(root).strip()
    if not is_uri(root) and not Path(root).expanduser().is_absolute():
        raise ConfigError(f"cluster.storage_root: {root!r} must be an absolute folder that "
                          "every node mounts at the same path (or a URI such as s3://bucket/x)")
    return str(Path(root).expanduser()) if not is_uri(root) else root


def _relative_written(cfg: ExperimentConfig) -> dict[str, str]:
    """Written keys whose value is a relative path -> that relative path."""
    out: dict[str, str] = {}
    for key in WRITTEN_KEYS:
        value = str(get_key(cfg, key))
        if not is_uri(value) and not Path(value).expanduser().is_absolute():
            out[key] = value
    uri = cfg.tracking.tracking_uri
    if uri.startswith(SQLITE_PREFIX) and not uri.startswith(SQLITE_PREFIX + "/"):
        out["tracking.tracking_uri"] = uri[len(SQLITE_PREFIX):]
    return out


def _place_written(cfg: ExperimentConfig) -> list[str]:
    relative = _relative_written(cfg)
    if not relative:
        return []
    root = _storage_root(cfg)
    if root is None:
        raise ConfigError(
            f"{', '.join(relative)}: relative paths would land in the job's temporary working "
            "dir (deleted when the job ends, on one node only); set cluster.storage_root to a "
            "folder every node mounts (e.g. cluster.storage_root=/mnt/shared/ecglm) or give "
            "absolute paths / URIs")
    out = []
    for key, rel in relative.items():
        if is_uri(root) and key not in URI_KEYS:
            raise ConfigError(
                f"{key}: needs a folder every node mounts, but cluster.storage_root {root!r} "
                f"is a URI; give {key} an absolute path on shared storage")
        placed = _under(root, rel, key)
        out.append(f"{key}={SQLITE_PREFIX + placed if key == 'tracking.tracking_uri' else placed}")
    return out


def _place_inputs(cfg: ExperimentConfig, base: Path) -> tuple[list[str], list[str]]:
    """Relative read-only inputs resolved against ``base`` (overrides, names for a warning)."""
    overrides, named = [], []
    for key in (*READ_KEYS, *OPTIONAL_PATH_KEYS, *EXISTING_PATH_KEYS):
        value = get_key(cfg, key)
        if not value or is_uri(str(value)) or Path(str(value)).expanduser().is_absolute():
            continue
        local = (base / str(value)).resolve()
        if key in EXISTING_PATH_KEYS and not local.exists():
            continue  # a hub model id or an MLflow run id, not a folder
        overrides.append(f"{key}={local}")
        named.append(f"{key}={local}")
    return overrides, named


def tracking_is_loopback(cfg: ExperimentConfig) -> bool:
    """True when ``tracking.tracking_uri`` is an HTTP server on this machine's loopback."""
    uri = cfg.tracking.tracking_uri
    return uri.startswith(("http://", "https://")) and urlparse(uri).hostname in LOOPBACK_HOSTS


def place_for_cluster(cfg: ExperimentConfig, base: Path, remote: bool) -> Placement:
    """Check ``cfg`` for a submitted job and return the overrides that make it cluster-safe.

    Args:
        cfg: the config as loaded locally (YAML + the user's overrides).
        base: folder relative input paths are taken from (the submitter's cwd).
        remote: True when the cluster is not this machine (a loopback tracking server is then
            suspicious; relative inputs must exist on every node).

    Returns:
        :class:`Placement`: overrides (absolute paths under ``cluster.storage_root`` for
        relative written keys, absolute input paths) and warnings.

    Raises:
        ConfigError: relative written paths and no ``cluster.storage_root`` (names the keys),
            a relative ``cluster.storage_root``, a URI storage root for a key that needs a
            folder, or a relative path that climbs out of the storage root.
    """
    written = _place_written(cfg)
    inputs, named = _place_inputs(cfg, base)
    warnings = []
    if named and remote:
        warnings.append("relative input paths were resolved on this machine and must exist at "
                        f"the same place on every node: {', '.join(named)}")
    if remote and tracking_is_loopback(cfg):
        warnings.append(
            f"tracking.tracking_uri={cfg.tracking.tracking_uri} names the loopback, but the "
            "job runs on the cluster: there it means each node itself, and Train workers on "
            "other nodes log metrics too; use the MLflow server's address on the cluster "
            "network (cluster.yaml: http://<head private ip>:5000)")
    return Placement(overrides=[*written, *inputs], warnings=warnings)
