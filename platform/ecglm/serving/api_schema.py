"""OpenAPI description of the ecglm routes (documentation only: requests are validated by
:mod:`ecglm.serving.validation` and :mod:`ecglm.serving.inputs`, whose errors name the field).
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, Field


class ECGBody(BaseModel):
    """A 12-lead ECG as JSON."""

    ecg: list[list[float]] = Field(description="12 leads (I II III aVR aVL aVF V1..V6) of "
                                               "equal length, millivolts")
    fs: float = Field(description="Sampling rate of `ecg`, Hz")


class AnswerBody(ECGBody):
    """Question answering (task qa)."""

    question: str = Field(description="The question about the ECG")
    options: Optional[list[str]] = Field(
        None, description="Candidate answers; may be left out for yes/no questions")


class RetrievedReport(BaseModel):
    ecg_id: int
    report: str
    score: float = Field(description="Cosine similarity of the ECG embeddings")


class Reply(BaseModel):
    """Fields every answer carries; each task adds its own (qa: `answer`, `options`; report:
    `report`; classify: `labels`, ...)."""

    task: Optional[str] = None
    generated: str = Field(description="The text the LLM generated")
    retrieved_reports: list[RetrievedReport]
    model: str = Field(description="`main` or the adapter that answered")
    request_id: str
    timings_ms: dict[str, float] = Field(description="preprocess, encode, retrieve, generate, "
                                                     "total (ms)")


class AnswerReply(Reply):
    answer: list[str]
    options: list[str]


RAW_HEADERS = ("X-ECG-Dtype: int16 | float32; X-ECG-Shape: 12,<samples> (lead-major); "
               "X-ECG-FS: Hz; X-ECG-Units-Per-MV: optional (int16 default 1000 = microvolts, "
               "float32 default 1)")


def openapi_body(tasks: list[str]) -> dict[str, Any]:
    """``openapi_extra`` of a route: its three request body forms."""
    json_model = AnswerBody if "qa" in tasks else ECGBody
    form_fields: dict[str, Any] = {"files": {"type": "array", "items": {
        "type": "string", "format": "binary"}, "description": "the record's .hea and data "
                                                              "file(s) (.dat)"}}
    if "qa" in tasks:
        form_fields["question"] = {"type": "string"}
        form_fields["options"] = {"type": "string", "description": "JSON array of candidate "
                                                                    "answers (or repeat the field)"}
    return {"parameters": [
                {"name": "stream", "in": "query", "required": False,
                 "schema": {"type": "boolean"},
                 "description": "stream the generated text as server-sent events (token "
                                "events, then one done event with the full answer)"},
                {"name": "serve_multiplexed_model_id", "in": "header", "required": False,
                 "schema": {"type": "string"}, "description": "adapter name (serve.adapters)"}],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": json_model.model_json_schema()},
                "multipart/form-data": {"schema": {"type": "object",
                                                   "properties": form_fields}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary",
                                                        "description": RAW_HEADERS}}}}}


def response_model(tasks: list[str]) -> type[Reply]:
    """The documented 200 body of a route."""
    return AnswerReply if "qa" in tasks else Reply
