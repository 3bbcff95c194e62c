"""The MLflow Model Registry: ``models:/NAME@ALIAS`` and ``models:/NAME/VERSION`` references,
new versions of a run's logged model, aliases.

Low level on purpose (imports only mlflow, deferred): :mod:`ecglm.checkpoint` resolves
registry references through :func:`resolve`; logging the pyfunc a version points at lives in
:mod:`ecglm.serving.pyfunc`, which calls :func:`register_version`.

Everything goes through :class:`mlflow.tracking.MlflowClient` with an explicit tracking URI
(the registry is the tracking store: sqlite or an ``http(s)://`` server); no global MLflow
state is touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

REGISTRY_SCHEME = "models:/"
"""Prefix of a registry reference."""
MODEL_ARTIFACT = "model"
"""Artifact folder of a run's logged pyfunc model (``runs:/<run id>/model``)."""

_NAME = r"[^/@]+"
_ALIAS_REF = re.compile(rf"^models:/(?P<name>{_NAME})@(?P<alias>[^/@]+)$")
_VERSION_REF = re.compile(rf"^models:/(?P<name>{_NAME})/(?P<version>[0-9]+)$")
_RUNS_SOURCE = re.compile(r"^runs:/(?P<run_id>[^/]+)/(?P<path>.+)$")


class RegistryRefError(ValueError):
    """A ``models:/`` reference is malformed, or names a model, alias or version that does not
    exist (the message names it and lists what exists)."""


@dataclass(frozen=True)
class ModelRef:
    """A parsed ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``."""

    name: str
    alias: Optional[str] = None
    version: Optional[str] = None

    def __str__(self) -> str:
        tail = f"@{self.alias}" if self.alias else f"/{self.version}"
        return f"{REGISTRY_SCHEME}{self.name}{tail}"


@dataclass(frozen=True)
class ResolvedVersion:
    """A registered model version and where its files come from."""

    name: str
    version: str
    run_id: Optional[str]
    """The run that logged the model (None for a version registered from another source)."""
    source: str
    """The version's source URI (``runs:/<run id>/model`` for versions registered here)."""
    aliases: tuple[str, ...] = ()

    @property
    def run_artifact_path(self) -> Optional[str]:
        """The model's artifact folder inside :attr:`run_id` when the source is a ``runs:/``
        URI of that run (``model``), else None."""
        m = _RUNS_SOURCE.match(self.source)
        if m and m.group("run_id") == self.run_id:
            return m.group("path").rstrip("/")
        return None


def is_registry_ref(ref: str) -> bool:
    """True for a ``models:/...`` reference."""
    return str(ref).startswith(REGISTRY_SCHEME)


def parse_ref(ref: str) -> ModelRef:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> :class:`ModelRef`.

    Raises:
        RegistryRefError: any other form (the message shows the accepted ones).
    """
    ref = str(ref).strip()
    m = _ALIAS_REF.match(ref)
    if m:
        return ModelRef(m.group("name"), alias=m.group("alias"))
    m = _VERSION_REF.match(ref)
    if m:
        return ModelRef(m.group("name"), version=m.group("version"))
    raise RegistryRefError(f"registry reference {ref!r}: expected models:/NAME@ALIAS or "
                           "models:/NAME/VERSION (VERSION a number)")


def _client(tracking_uri: str):
    # deferred on purpose: importing mlflow takes seconds (see ecglm.tracking.mlflow_run)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _not_found(exc: Exception) -> bool:
    from mlflow.exceptions import MlflowException  # deferred on purpose (see _client)

    return isinstance(exc, MlflowException) and exc.error_code in (
        "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def aliases(tracking_uri: str, name: str) -> dict[str, str]:
    """``{alias: version}`` of registered model ``name``.

    Raises:
        RegistryRefError: no registered model ``name`` (the message lists the existing ones).
    """
    client = _client(tracking_uri)
    try:
        model = client.get_registered_model(name)
    except Exception as exc:  # noqa: BLE001 - re-raised unless it means "no such model"
        if not _not_found(exc):
            raise
        names = sorted(m.name for m in client.search_registered_models(max_results=50))
        raise RegistryRefError(
            f"registered model {name!r} not found in {tracking_uri} (registered: "
            f"{', '.join(names) if names else 'none'})") from None
    return {str(k): str(v) for k, v in (model.aliases or {}).items()}


def resolve(tracking_uri: str, ref: str) -> ResolvedVersion:
    """The registered version ``ref`` (``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``)
    points at.

    Raises:
        RegistryRefError: malformed reference, unknown model, alias or version (the message
            names it and lists the aliases/versions that exist).
    """
    parsed = parse_ref(ref)
    client = _client(tracking_uri)
    known = aliases(tracking_uri, parsed.name)
    try:
        if parsed.alias is not None:
            if parsed.alias not in known:
                raise RegistryRefError(
                    f"{parsed}: model {parsed.name!r} has no alias {parsed.alias!r} (aliases: "
                    + (", ".join(f"{a} -> version {v}" for a, v in sorted(known.items()))
                       or "none") + ")")
            mv = client.get_model_version_by_alias(parsed.name, parsed.alias)
        else:
            mv = client.get_model_version(parsed.name, str(parsed.version))
    except RegistryRefError:
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised unless it means "no such version"
        if not _not_found(exc):
            raise
        versions = sorted(int(v.version) for v in
                          client.search_model_versions(f"name = '{parsed.name}'"))
        raise RegistryRefError(f"{parsed}: model {parsed.name!r} has no version "
                               f"{parsed.version} (versions: "
                               f"{', '.join(map(str, versions)) or 'none'})") from None
    return ResolvedVersion(parsed.name, str(mv.version), mv.run_id or None, str(mv.source),
                           tuple(sorted(mv.aliases or ())))


def check_name(name: str, key: str = "name") -> str:
    """A registered-model name usable in ``models:/NAME@ALIAS`` (no ``/`` or ``@``).

    Raises:
        RegistryRefError: empty, or contains ``/`` or ``@`` (the message names ``key``).
    """
    text = str(name or "").strip()
    if not text or "/" in text or "@" in text:
        raise RegistryRefError(f"{key}: expected a model name without '/' or '@', got {name!r}")
    return text


def register_version(tracking_uri: str, run_id: str, name: str,
                     alias: Optional[str] = None,
                     artifact_path: str = MODEL_ARTIFACT) -> ResolvedVersion:
    """Register ``runs:/<run_id>/<artifact_path>`` (a logged pyfunc model) as a new version
    of ``name`` (the registered model is created when missing) and point ``alias`` at it.

    Raises:
        RegistryRefError: bad ``name`` or ``alias``.
        mlflow.exceptions.MlflowException: the run does not exist.
    """
    name = check_name(name)
    if alias is not None:
        check_name(alias, "alias")
    client = _client(tracking_uri)
    client.get_run(run_id)  # fails fast, naming the run, when it does not exist
    try:
        client.get_registered_model(name)
    except Exception as exc:  # noqa: BLE001 - re-raised unless it means "no such model"
        if not _not_found(exc):
            raise
        client.create_registered_model(name, description="ecglm ECG-language model (pyfunc: "
                                                          "ECG + question -> answer)")
    source = f"runs:/{run_id}/{artifact_path}"
    mv = client.create_model_version(name, source=source, run_id=run_id)
    if alias is not None:
        client.set_registered_model_alias(name, alias, mv.version)
    return ResolvedVersion(name, str(mv.version), run_id, source,
                           (alias,) if alias is not None else ())


def has_artifact(tracking_uri: str, run_id: str, path: str) -> bool:
    """True when run ``run_id`` holds an artifact (file or folder) at ``path``."""
    parent, _, _ = path.rstrip("/").rpartition("/")
    listed = _client(tracking_uri).list_artifacts(run_id, parent or None)
    return any(a.path.rstrip("/") == path.rstrip("/") for a in listed)
