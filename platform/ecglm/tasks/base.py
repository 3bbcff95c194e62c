"""What every task plugin implements, and the typed rows and manifests they exchange.

A task (``cfg.task``) decides four things, nothing else does:

* **rows**: which examples exist per split (:meth:`Task.build_data` writes or finds them, with a
  :class:`TaskManifest` that counts ``in = ok + quarantined``) and their typed form
  (:attr:`Task.row_type`; Ray Data hands plain records to :meth:`Task.row`);
* **prompt and target**: the user-turn text of a row (:meth:`Task.user_text`) and the target
  ids with labels on the target only (:meth:`Task.encode_target`); the shared builders in
  :mod:`ecglm.tasks.encode` add the ECG placeholder, chat template and padding;
* **evaluation**: :meth:`Task.evaluate` scores the model on a split and returns an
  :class:`EvalOutcome` that :func:`ecglm.evaluation.writer.write_evaluation` writes and logs;
* **serving**: the JSON fields a request may carry (:meth:`Task.request_row` validates them
  into a row) and the response body (:meth:`Task.response`).

Signals in rows are int16 microvolt bytes, ``(n_ecg, 12, n_samples)`` row-major
(:func:`ecglm.data.sharding.encode_signals`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Generic, Mapping, Optional, Sequence, TypeVar

from ecglm.config import ExperimentConfig
from ecglm.config.schema import ServeConfig
from ecglm.data.rows import ECGRow
from ecglm.data.splits import SPLITS
from ecglm.evaluation.writer import EvalOutcome, EvalSection


class RequestError(ValueError):
    """A request field the endpoint cannot take: HTTP ``status`` naming ``field``."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.status = status
        self.field = field
        self.message = message


class EmptySplitError(ValueError):
    """A split the run needs holds no rows of the task."""


Row = TypeVar("Row", bound=ECGRow)


# ------------------------------------------------------------------------------------------------
# manifests
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RowCounts:
    """``n_in = n_ok + n_quarantined``; ``per_split`` counts the ok rows."""

    n_in: int
    n_ok: int
    n_quarantined: int
    per_split: dict[str, int]

    def __post_init__(self) -> None:
        if self.n_in != self.n_ok + self.n_quarantined:
            raise ValueError(f"row counts: in={self.n_in} != ok={self.n_ok} + "
                             f"quarantined={self.n_quarantined}")


@dataclass(frozen=True)
class TaskManifest:
    """What a task's rows are made of (``manifest.json`` next to them)."""

    task: str
    counts: RowCounts
    quarantine: Optional[str] = None
    """The JSONL report of quarantined inputs (``{"id", "reason"}`` per line), if any."""
    details: dict[str, Any] = field(default_factory=dict)
    """Task-specific provenance (targets config, label vocabulary, hashes...)."""

    def to_json(self) -> dict[str, Any]:
        """The manifest as JSON-ready data (the on-disk layout)."""
        return {"task": self.task, **self.details,
                "counts": {"in": self.counts.n_in, "ok": self.counts.n_ok,
                           "quarantined": self.counts.n_quarantined,
                           "per_split": dict(self.counts.per_split)},
                "quarantine": self.quarantine}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TaskManifest":
        """Inverse of :meth:`to_json`."""
        c = data["counts"]
        details = {k: v for k, v in data.items() if k not in ("task", "counts", "quarantine")}
        return cls(str(data["task"]), RowCounts(int(c["in"]), int(c["ok"]),
                                                int(c["quarantined"]),
                                                {s: int(n) for s, n in c["per_split"].items()}),
                   data.get("quarantine"), details)


@dataclass(frozen=True)
class TaskData:
    """A task's rows on disk: ``paths[split]`` Parquet (absent when the split is empty)."""

    root: Path
    paths: dict[str, Path]
    manifest: TaskManifest

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def count(self, split: str) -> int:
        return int(self.manifest.counts.per_split.get(split, 0))


def split_paths(root: Path, name: str = "{split}.parquet") -> dict[str, Path]:
    """``{split: root/<split>.parquet}`` for the splits whose file exists."""
    return {s: root / name.format(split=s) for s in SPLITS
            if (root / name.format(split=s)).exists()}


# ------------------------------------------------------------------------------------------------
# evaluation exchange
# ------------------------------------------------------------------------------------------------

@dataclass
class EvalContext(Generic[Row]):
    """What :meth:`Task.evaluate` gets. ``load_model()`` builds the model with the checkpoint
    loaded (only called once there is something to evaluate)."""

    cfg: ExperimentConfig
    rows: Sequence[Row]
    """Rows of ``evaluation.split`` (shard order, with retrieved reports); a list or a split
    read on demand (iterate it rather than copying it)."""
    train_rows: list[Row]
    """Rows of the train split (baselines); empty when ``evaluation.baselines`` is off."""
    neighbour_ids: Mapping[int, Sequence[int]]
    """Nearest training records per sample id (retrieval artifact)."""
    load_model: Callable[[], Any]
    sections: Sequence[EvalSection] = ()
    checkpoint: str = ""
    checkpoint_step: Optional[int] = None
    run_id: Optional[str] = None


# ------------------------------------------------------------------------------------------------
# the protocol
# ------------------------------------------------------------------------------------------------

class Task(ABC, Generic[Row]):
    """One task plugin (see the module docstring). Instances are stateless."""

    name: ClassVar[str]
    row_type: ClassVar[type[ECGRow]]
    items: ClassVar[str]
    """What a row is, for messages (``"QA items"``, ``"report records"``)."""
    request_fields: ClassVar[frozenset[str]] = frozenset()
    """JSON fields a serving request may carry besides ``ecg`` and ``fs``."""
    tune_metric: ClassVar[str]
    """Key of :meth:`evaluate`'s metrics a sweep ranks trials on (``tune.metric: task``;
    higher is better)."""

    # rows -----------------------------------------------------------------------------------
    def check_config(self, cfg: ExperimentConfig) -> None:
        """Fail fast, before any data is built, when ``cfg`` cannot run this task."""

    @abstractmethod
    def build_data(self, cfg: ExperimentConfig, shards: Any) -> TaskData:
        """Write (or reuse) the rows of every split from the run's
        :class:`ecglm.data.shards.ShardSet`."""

    def row(self, record: Mapping[str, Any] | ECGRow) -> Row:
        """A typed row from a record (typed rows pass through)."""
        if isinstance(record, ECGRow):
            return record  # type: ignore[return-value]
        return self.row_type.from_record(record)  # type: ignore[return-value]

    def rows(self, records: Sequence[Mapping[str, Any] | ECGRow]) -> list[Row]:
        return [self.row(r) for r in records]

    # prompt and target ------------------------------------------------------------------------
    @abstractmethod
    def user_text(self, row: Row, cfg: ExperimentConfig, rng: Any) -> str:
        """The user-turn text for ``row`` (``rng`` set: training's dynamic prompting; None:
        the fixed evaluation/serving prompt)."""

    @abstractmethod
    def encode_target(self, tokenizer: Any, prompt: str, row: Row,
                      max_length: int) -> dict[str, list[int]]:
        """``{"input_ids", "labels"}`` of ``prompt`` + the row's target (labels -100 on the
        prompt), at most ``max_length`` ids."""

    # evaluation -------------------------------------------------------------------------------
    @abstractmethod
    def evaluate(self, ctx: EvalContext[Row]) -> EvalOutcome:
        """Generate for ``ctx.rows``, score against the references and baselines."""

    # serving ----------------------------------------------------------------------------------
    def request_row(self, fields: Mapping[str, Any], serve: ServeConfig) -> Row:
        """The row a served request stands for (signals left empty: the ECG travels apart);
        by default a bare row (tasks whose requests carry only ``ecg`` and ``fs``).

        Raises:
            RequestError: a task field is missing or invalid (422 naming it).
        """
        return serving_row(self.row_type)

    @abstractmethod
    def response(self, row: Row, generated: str, cfg: ExperimentConfig) -> dict[str, Any]:
        """The task's part of the JSON response for ``generated`` text."""

    def request_fields_of(self, row: Row) -> dict[str, Any]:
        """The task fields a client sends to ask about ``row`` (the inverse of
        :meth:`request_row`; none by default)."""
        return {}

    @abstractmethod
    def reference(self, row: Row) -> str:
        """The row's reference answer as text (for people reading a demo or a log)."""

    @abstractmethod
    def headline(self, metrics: Mapping[str, float]) -> dict[str, dict[str, float]]:
        """The few numbers a person looks at first: ``{"model": {...}, "<baseline>": {...}}``
        from an evaluation's flat metrics."""


def evaluation_rows(ctx: EvalContext[Row], items: str) -> Sequence[Row]:
    """``ctx.rows`` cut to ``evaluation.max_items``, as a sequence: a split read on demand
    (:class:`~ecglm.evaluation.stream.ParquetRows`) stays on disk and is read batch by batch
    by whoever iterates it.

    Raises:
        ValueError: nothing to evaluate (names the split and what a row is).
    """
    cfg = ctx.cfg
    rows: Sequence[Row] = ctx.rows
    if cfg.evaluation.max_items is not None:
        rows = rows[: cfg.evaluation.max_items]
    if len(rows) == 0:
        raise ValueError(f"evaluation.split: split '{cfg.evaluation.split}' has no {items}")
    return rows


def system_headline(metrics: Mapping[str, float], keys: Sequence[str],
                    baselines: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{"model": {key: value}, "<baseline>": {...}}`` from metrics named ``model/<key>`` and
    ``baseline/<name>/<key>`` (3 decimals; a system with none of ``keys`` is left out)."""
    out: dict[str, dict[str, float]] = {}
    for name, prefix in (("model", "model/"), *((b, f"baseline/{b}/") for b in baselines)):
        got = {k: round(metrics[prefix + k], 3) for k in keys if prefix + k in metrics}
        if got:
            out[name] = got
    return out


def serving_row(row_type: type[ECGRow], **fields: Any) -> Any:
    """A row for one served single-ECG request (no stored signal)."""
    return row_type(sample_id=-1, ecg_ids=(-1,), n_ecg=1, n_samples=0, signals=b"", **fields)
