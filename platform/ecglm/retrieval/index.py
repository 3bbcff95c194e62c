"""FAISS report retriever: ECG embedding -> top-k reports of *other* training records.

The index stores L2-normalised embeddings, so inner product is cosine similarity; FAISS ids are
ECG ids, and a JSON sidecar maps each id to its report and patient. A query never gets its own
record back (nor, optionally, another record of the same patient).

The index kind comes from ``retrieval.index`` (:class:`~ecglm.config.schema.RetrievalConfig`):
``flat`` (exact), ``ivf`` or ``hnsw`` (approximate; see :mod:`ecglm.retrieval.faiss_kinds`).
Build with :meth:`ReportIndex.build` (all vectors at once: ivf k-means is trained on them), load
with ``ReportIndex.load(folder, cfg.retrieval)`` (applies the query-time ``nprobe`` /
``ef_search`` and the GPU placement of the config).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ecglm.config.checks import ConfigError
from ecglm.config.schema import RetrievalConfig
from ecglm.retrieval import faiss_kinds as fk

INDEX_FILE = "index.faiss"
SIDECAR_FILE = "reports.json"
BUILD_CHUNK = 65536
"""Vectors normalised and added per step by :meth:`ReportIndex.build` (bounded memory)."""


@dataclass(frozen=True)
class Hit:
    """One retrieved record: its ECG id, patient id, report and cosine similarity in [-1, 1]."""

    ecg_id: int
    patient_id: int
    report: str
    score: float


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings: expected shape (N, d), got {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class ReportIndex:
    """Cosine-similarity index over training-ECG embeddings with an id -> report sidecar.

    Args:
        dim: embedding width ``d``.
        spec: index kind and parameters (``None``: exact ``flat`` on the CPU). With
            ``spec.use_gpu``, flat/ivf indexes live on GPU 0 when faiss has GPU support and
            sees a GPU (saved through a CPU copy); hnsw always stays on the CPU.
    """

    def __init__(self, dim: int, spec: Optional[RetrievalConfig] = None) -> None:
        spec = RetrievalConfig(use_gpu=False) if spec is None else spec
        if dim <= 0:
            raise ValueError(f"dim: must be > 0, got {dim}")
        self.dim = dim
        self._kind: fk.IndexKind = spec.index
        self._spec = spec
        self._params: dict[str, int] = {}
        self._index: Any = None  # ivf: created by train()
        self._gpu: Optional[fk.GpuPlacement] = None
        self._want_gpu = spec.use_gpu and self._kind in fk.GPU_KINDS and fk.gpu_available()
        if self._kind == "flat":
            self._set_index(fk.new_index("flat", dim))
        elif self._kind == "hnsw":
            cpu = fk.new_index("hnsw", dim, hnsw_m=spec.hnsw_m,
                               ef_construction=spec.ef_construction)
            fk.set_query_params(cpu, "hnsw", ef_search=spec.ef_search)
            self._params = fk.read_params(cpu, "hnsw")
            self._set_index(cpu)
        self._reports: dict[int, str] = {}
        self._patients: dict[int, int] = {}
        self._per_patient: dict[int, int] = {}  # records per patient (search over-fetch)
        self._max_per_patient = 0

    # ---------------------------------------------------------------- description
    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    @property
    def kind(self) -> str:
        """``flat``, ``ivf`` or ``hnsw``."""
        return self._kind

    @property
    def is_trained(self) -> bool:
        """False only for an ivf index whose k-means cells are not trained yet."""
        return self._index is not None and bool(self._index.is_trained)

    def describe(self) -> dict[str, Any]:
        """For logs: ``kind``, ``dim``, ``ntotal``, ``device`` (``cpu``/``gpu``), ``metric``
        and the kind's parameters (ivf ``nlist``, ``nprobe``; hnsw ``hnsw_m``,
        ``ef_construction``, ``ef_search``)."""
        return {"kind": self._kind, "dim": self.dim, "ntotal": len(self),
                "device": "gpu" if self._gpu is not None else "cpu",
                "metric": "inner_product (cosine)", **self._params}

    # ---------------------------------------------------------------- building
    @classmethod
    def build(cls, dim: int, spec: Optional[RetrievalConfig], embeddings: np.ndarray,
              ecg_ids: Sequence[int], reports: Sequence[str],
              patient_ids: Sequence[int]) -> "ReportIndex":
        """An index of ``spec.index`` kind holding all the given records (ivf: k-means trained
        on up to :data:`~ecglm.retrieval.faiss_kinds.TRAIN_POINTS_PER_CELL` sampled vectors per
        cell of these embeddings first).

        Args:
            dim: embedding width.
            spec: index kind and parameters (``None``: exact flat, CPU).
            embeddings: ``(N, dim)`` float array, e.g. a ``np.memmap`` (read in chunks of
                :data:`BUILD_CHUNK` rows, normalised here).
            ecg_ids, reports, patient_ids: ``N`` entries each, as for :meth:`add`.
        """
        obj = cls(dim, spec)
        n = int(embeddings.shape[0])
        if not (len(ecg_ids) == len(reports) == len(patient_ids) == n):
            raise ValueError(
                f"ecg_ids/reports/patient_ids: expected {n} entries each, got "
                f"{len(ecg_ids)}/{len(reports)}/{len(patient_ids)}")
        if obj._kind == "ivf" and n > 0:
            obj.train(embeddings)
        for s in range(0, n, BUILD_CHUNK):
            e = min(s + BUILD_CHUNK, n)
            obj.add(np.asarray(embeddings[s:e]), ecg_ids[s:e], reports[s:e], patient_ids[s:e])
        return obj

    def train(self, embeddings: np.ndarray, n_total: Optional[int] = None) -> None:
        """ivf only (a no-op for flat/hnsw): choose ``nlist`` for ``n_total`` vectors (default
        ``len(embeddings)``) with :func:`~ecglm.retrieval.faiss_kinds.ivf_nlist`, printing how
        (and whether it was reduced), and train the cells on a seeded sample of ``embeddings``
        ``(N, dim)``.

        Raises:
            ValueError: the index is already trained, or ``embeddings`` is empty.
        """
        if self._kind != "ivf":
            return
        if self._index is not None:
            raise ValueError("train: this ivf index is already trained")
        n = int(embeddings.shape[0])
        if n == 0:
            raise ValueError("embeddings: ivf training needs at least one vector")
        n_total = n if n_total is None else n_total
        nlist, note = fk.ivf_nlist(self._spec.nlist, n_total, n)
        n_sample = min(n, fk.TRAIN_POINTS_PER_CELL * nlist)
        rows = (np.arange(n) if n_sample == n else
                np.sort(np.random.default_rng(0).choice(n, size=n_sample, replace=False)))
        sample = _normalise(np.asarray(embeddings[rows]))
        if sample.shape[1] != self.dim:
            raise ValueError(f"embeddings: expected dim {self.dim}, got {sample.shape[1]}")
        print(f"[retrieval] ivf: {note}; k-means on {n_sample} of {n} vectors", flush=True)
        index = fk.new_index("ivf", self.dim, nlist=nlist)
        index.train(sample)
        self._params = {"nlist": nlist}
        self._set_index(index)
        self.set_query_params(nprobe=self._spec.nprobe)

    def set_query_params(self, nprobe: Optional[int] = None,
                         ef_search: Optional[int] = None) -> dict[str, Any]:
        """Change the query-time parameters: ivf ``nprobe`` (clamped to ``nlist``), hnsw
        ``ef_search``; the one of another kind, and ``None``, change nothing. Returns
        :meth:`describe`.

        Raises:
            ValueError: a value below 1 (named ``nprobe`` / ``ef_search``).
        """
        for name, value in (("nprobe", nprobe), ("ef_search", ef_search)):
            if value is not None and value < 1:
                raise ValueError(f"{name}: must be >= 1, got {value}")
        if self._index is not None:
            self._params.update(fk.set_query_params(
                self._index, self._kind, nprobe=nprobe, ef_search=ef_search,
                nlist=self._params.get("nlist"), on_gpu=self._gpu is not None))
        return self.describe()

    def _set_index(self, cpu_index: Any) -> None:
        """Hold ``cpu_index``, on the GPU when asked and possible."""
        if self._want_gpu:
            self._gpu = self._gpu or fk.GpuPlacement()
            self._index = self._gpu.to_gpu(cpu_index)
        else:
            self._index = cpu_index

    def add(
        self,
        embeddings: np.ndarray,
        ecg_ids: Sequence[int],
        reports: Sequence[str],
        patient_ids: Sequence[int],
    ) -> None:
        """Add records. An untrained ivf index is first trained on these embeddings (printed;
        for a good ivf index give all vectors at once, or use :meth:`build`).

        Args:
            embeddings: ``(N, dim)`` float array (normalised here).
            ecg_ids: ``N`` unique integer ids (also the FAISS ids).
            reports: ``N`` report texts.
            patient_ids: ``N`` patient ids.
        """
        emb = _normalise(embeddings)
        n = emb.shape[0]
        if emb.shape[1] != self.dim:
            raise ValueError(f"embeddings: expected dim {self.dim}, got {emb.shape[1]}")
        if not (len(ecg_ids) == len(reports) == len(patient_ids) == n):
            raise ValueError(
                f"ecg_ids/reports/patient_ids: expected {n} entries each, got "
                f"{len(ecg_ids)}/{len(reports)}/{len(patient_ids)}"
            )
        ids = np.asarray(ecg_ids, dtype=np.int64)
        id_list = ids.tolist()
        dup = [i for i in id_list if i in self._reports]
        if dup or len(set(id_list)) != n:
            raise ValueError(f"ecg_ids: duplicate ids {sorted(dup)[:5] or 'within batch'}")
        if n == 0:
            return
        if self._index is None:
            self.train(emb)
        self._index.add_with_ids(emb, ids)
        for i, r, p in zip(id_list, reports, patient_ids):
            self._reports[int(i)] = str(r)
            self._patients[int(i)] = int(p)
            self._count_patient(int(p))

    # ---------------------------------------------------------------- searching
    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude_ids: Optional[Sequence[Optional[int]]] = None,
        exclude_patients: Optional[Sequence[Optional[int]]] = None,
    ) -> list[list[Hit]]:
        """Top-``k`` hits per query, best first.

        Args:
            queries: ``(Q, dim)`` embeddings.
            k: hits per query.
            exclude_ids: per query, an ECG id never returned (the query's own record), or None.
            exclude_patients: per query, a patient id whose records are never returned, or None.

        Returns:
            ``Q`` lists of at most ``k`` :class:`Hit`: fewer only if the index is too small, or
            (ivf) the ``nprobe`` cells visited hold too few records after the exclusions.
        """
        q = _normalise(queries)
        n_q = q.shape[0]
        ex_ids = list(exclude_ids) if exclude_ids is not None else [None] * n_q
        ex_pat = list(exclude_patients) if exclude_patients is not None else [None] * n_q
        if len(ex_ids) != n_q or len(ex_pat) != n_q:
            raise ValueError("exclude_ids/exclude_patients: need one entry per query")
        out: list[list[Hit]] = [[] for _ in range(n_q)]
        n = len(self)
        if n == 0:
            return out
        cap = min(n, fk.GPU_MAX_K) if self._gpu is not None else n
        # Over-fetch so that filtering still leaves k hits; widen (x4) for the rows left short
        # while the index still had more to give.
        fetch = min(cap, k + 1 + max(0, self._max_records_per_patient()))
        rows = list(range(n_q))
        while rows:
            scores, ids = self._index.search(q[rows], fetch)
            retry = []
            for j, row in enumerate(rows):
                hits: list[Hit] = []
                for s, i in zip(scores[j], ids[j]):
                    i = int(i)
                    if i < 0 or i == ex_ids[row]:
                        continue
                    if ex_pat[row] is not None and self._patients[i] == ex_pat[row]:
                        continue
                    hits.append(Hit(i, self._patients[i], self._reports[i], float(s)))
                    if len(hits) == k:
                        break
                out[row] = hits
                if len(hits) < k and fetch < cap and int(ids[j][-1]) >= 0:
                    retry.append(row)
            rows = retry
            fetch = min(cap, fetch * 4)
        return out

    def _max_records_per_patient(self) -> int:
        """Most records of one patient (kept up to date by :meth:`add`/:meth:`load`, so a
        batched search over a large index does not recount)."""
        return self._max_per_patient

    def _count_patient(self, patient: int) -> None:
        self._per_patient[patient] = self._per_patient.get(patient, 0) + 1
        self._max_per_patient = max(self._max_per_patient, self._per_patient[patient])

    # ---------------------------------------------------------------- persistence
    def save(self, folder: str | Path) -> Path:
        """Write ``index.faiss`` (a CPU copy when on the GPU) and the ``reports.json`` sidecar
        (``dim``, ``index``: kind and parameters, ``records``) into ``folder``."""
        faiss = fk.faiss_module()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self._index is None:  # untrained, empty ivf: a one-cell placeholder
            cpu = fk.new_index("ivf", self.dim, nlist=1)
        else:
            cpu = fk.to_cpu(self._index) if self._gpu is not None else self._index
        faiss.write_index(cpu, str(folder / INDEX_FILE))
        desc = self.describe()
        sidecar = {
            "dim": self.dim,
            "index": {k: v for k, v in desc.items() if k not in ("ntotal", "device", "dim")},
            "records": {str(i): {"report": r, "patient_id": self._patients[i]}
                        for i, r in self._reports.items()},
        }
        (folder / SIDECAR_FILE).write_text(json.dumps(sidecar))
        return folder

    @classmethod
    def load(cls, folder: str | Path, spec: Optional[RetrievalConfig] = None) -> "ReportIndex":
        """Read an index written by :meth:`save` (JSON + FAISS only; nothing is unpickled).

        Args:
            folder: the folder :meth:`save` wrote.
            spec: ``None``: the index as saved, on the CPU. Otherwise the query-time
                parameters of ``spec`` (ivf ``nprobe``, hnsw ``ef_search``) are applied and, with
                ``spec.use_gpu``, a flat/ivf index moves to the GPU when one is usable. Build
                parameters (``nlist``, ``hnsw_m``, ``ef_construction``) are those saved.

        Raises:
            ConfigError: ``spec.index`` is not the saved kind (``retrieval.index``).
            ValueError: the FAISS file and the sidecar disagree.
        """
        faiss = fk.faiss_module()
        folder = Path(folder)
        sidecar = json.loads((folder / SIDECAR_FILE).read_text())
        cpu = faiss.read_index(str(folder / INDEX_FILE))
        kind = fk.detect_kind(cpu)
        saved = sidecar.get("index", {}).get("kind", "flat")  # older sidecars: flat only
        if saved != kind:
            raise ValueError(f"{folder}: {INDEX_FILE} is a {kind} index but {SIDECAR_FILE} "
                             f"says {saved}")
        if spec is not None and spec.index != kind:
            raise ConfigError(f"retrieval.index: {folder} holds a {kind} index, the config asks "
                              f"for {spec.index!r}; rebuild the retrieval artifact or set "
                              f"retrieval.index={kind}")
        base = spec if spec is not None else RetrievalConfig(use_gpu=False)
        obj = cls.__new__(cls)
        obj.dim = int(sidecar["dim"])
        obj._kind = kind
        obj._spec = base
        obj._gpu = None
        obj._index = None
        obj._want_gpu = base.use_gpu and kind in fk.GPU_KINDS and fk.gpu_available()
        obj._params = fk.read_params(cpu, kind)
        obj._reports, obj._patients, obj._per_patient = {}, {}, {}
        obj._max_per_patient = 0
        if kind == "ivf" and not cpu.is_trained:  # saved empty: the first add() trains it
            obj._params = {}
        else:
            obj._set_index(cpu)
        if spec is not None:
            obj.set_query_params(nprobe=spec.nprobe, ef_search=spec.ef_search)
        for k, v in sidecar["records"].items():
            obj._reports[int(k)] = str(v["report"])
            obj._patients[int(k)] = int(v["patient_id"])
            obj._count_patient(int(v["patient_id"]))
        if len(obj) != len(obj._reports):
            raise ValueError(
                f"{folder}: index holds {len(obj)} vectors but sidecar "
                f"{len(obj._reports)} reports"
            )
        return obj
