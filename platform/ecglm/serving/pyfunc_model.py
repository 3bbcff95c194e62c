"""The MLflow ``PythonModel`` of a trained ecglm model (:mod:`ecglm.serving.pyfunc` explains
the inputs, outputs and artifacts, and logs it). Apart so that importing the logging helpers
does not import ``mlflow.pyfunc`` (seconds); the model's code script imports this module."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pandas as pd
import yaml
from mlflow.pyfunc import PythonModel

from ecglm.config import from_dict
from ecglm.serving.pyfunc import (CHECKPOINT_ARTIFACT, CONFIG_ARTIFACT, RETRIEVAL_ARTIFACT,
                                  Predictor, requests_from_frame)


class ECGLMModel(PythonModel):
    """MLflow pyfunc of a trained ecglm model (see :mod:`ecglm.serving.pyfunc`)."""

    def __init__(self) -> None:
        self.predictor: Optional[Predictor] = None

    def load_context(self, context: Any) -> None:
        """Rebuild the model from the ``config``, ``checkpoint`` and ``retrieval`` artifacts
        (the base LLM rebuilt from the config, see :mod:`ecglm.serving.pyfunc`)."""
        cfg = from_dict(yaml.safe_load(Path(context.artifacts[CONFIG_ARTIFACT]).read_text()))
        self.predictor = Predictor(cfg, context.artifacts[CHECKPOINT_ARTIFACT],
                                   context.artifacts[RETRIEVAL_ARTIFACT])

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: Optional[dict[str, Any]] = None) -> pd.DataFrame:
        """Answers for the requests in ``model_input`` (one row each; columns in
        :mod:`ecglm.serving.pyfunc`).

        Raises:
            PyfuncInputError: a row the HTTP endpoint would refuse (row index and field named).
        """
        if self.predictor is None:
            raise RuntimeError("ECGLMModel: load it with mlflow.pyfunc.load_model")
        requests = requests_from_frame(model_input, self.predictor.cfg)
        return pd.DataFrame(self.predictor.answer(requests))
