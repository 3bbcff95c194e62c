"""``ecglm register RUN_ID --name NAME [--alias ALIAS]``: a training run's model as a new
version in the MLflow Model Registry.

The run's pyfunc model (artifact ``model``) is registered; a run that has a ``checkpoint``
artifact but no model (a sweep trial, or ``tracking.log_model: false``) gets its model logged
first. The tracking URI comes from ``--tracking-uri`` or from the config's
``tracking.tracking_uri``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ecglm.serving.pyfunc import register_run


def run(tracking_uri: str, run_id: str, name: str, alias: Optional[str],
        work_dir: Path) -> dict[str, Any]:
    """Register ``run_id``'s model as ``name`` (alias ``alias``); the JSON the CLI prints:
    ``name``, ``version``, ``alias``, ``run_id``, ``source`` and the ``models:/`` reference.

    Raises:
        ecglm.tracking.registry.RegistryRefError: bad name or alias.
        ecglm.checkpoint.CheckpointFileError: the run has no model and no checkpoint +
            retrieval to build one from.
    """
    version = register_run(tracking_uri, run_id, name, alias, work_dir)
    ref = f"models:/{version.name}@{alias}" if alias else f"models:/{version.name}/{version.version}"
    return {"name": version.name, "version": version.version, "alias": alias,
            "run_id": run_id, "source": version.source, "tracking_uri": tracking_uri,
            "model_uri": ref}
