"""FAISS report retriever: ECG embedding -> top-k reports of *other* training records.

The index stores L2-normalised embeddings in an ``IndexIDMap(IndexFlatIP)`` so inner product is
cosine similarity; FAISS ids are ECG ids, and a JSON sidecar maps each id to its report and
patient. A query never gets its own record back (nor, optionally, another record of the same
patient).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

INDEX_FILE = "index.faiss"
SIDECAR_FILE = "reports.json"


@dataclass(frozen=True)
class Hit:
    """One retrieved record: its ECG id, patient id, report and cosine similarity in [-1, 1]."""

    ecg_id: int
    patient_id: int
    report: str
    score: float


def _faiss():  # imported lazily: faiss-cpu and faiss-gpu are alternative extras
    import faiss

    return faiss


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings: expected shape (N, d), got {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class ReportIndex:
    """Cosine-similarity index over training-ECG embeddings with an id -> report sidecar."""

    def __init__(self, dim: int) -> None:
        faiss = _faiss()
        self.dim = dim
        self._index = faiss.IndexIDMap(faiss.IndexFlatIP(dim))
        self._reports: dict[int, str] = {}
        self._patients: dict[int, int] = {}
        self._per_patient: dict[int, int] = {}  # records per patient (search over-fetch)
        self._max_per_patient = 0

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(
        self,
        embeddings: np.ndarray,
        ecg_ids: Sequence[int],
        reports: Sequence[str],
        patient_ids: Sequence[int],
    ) -> None:
        """Add records.

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
        dup = set(ids.tolist()) & set(self._reports)
        if dup or len(set(ids.tolist())) != n:
            raise ValueError(f"ecg_ids: duplicate ids {sorted(dup)[:5] or 'within batch'}")
        self._index.add_with_ids(emb, ids)
        for i, r, p in zip(ids.tolist(), reports, patient_ids):
            self._reports[int(i)] = str(r)
            self._patients[int(i)] = int(p)
            self._count_patient(int(p))

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude_ids: Optional[Sequence[int]] = None,
        exclude_patients: Optional[Sequence[Optional[int]]] = None,
    ) -> list[list[Hit]]:
        """Top-``k`` hits per query, best first.

        Args:
            queries: ``(Q, dim)`` embeddings.
            k: hits per query.
            exclude_ids: per query, an ECG id never returned (the query's own record), or None.
            exclude_patients: per query, a patient id whose records are never returned, or None.

        Returns:
            ``Q`` lists of at most ``k`` :class:`Hit` (fewer only if the index is too small).
        """
        q = _normalise(queries)
        n_q = q.shape[0]
        ex_ids = list(exclude_ids) if exclude_ids is not None else [None] * n_q
        ex_pat = list(exclude_patients) if exclude_patients is not None else [None] * n_q
        if len(ex_ids) != n_q or len(ex_pat) != n_q:
            raise ValueError("exclude_ids/exclude_patients: need one entry per query")
        if len(self) == 0:
            return [[] for _ in range(n_q)]
        # Over-fetch so that filtering still leaves k hits; fall back to the whole index.
        fetch = min(len(self), k + 1 + max(0, self._max_records_per_patient()))
        out: list[list[Hit]] = []
        while True:
            scores, ids = self._index.search(q, fetch)
            out = []
            short = False
            for row in range(n_q):
                hits: list[Hit] = []
                for s, i in zip(scores[row], ids[row]):
                    i = int(i)
                    if i < 0 or i == ex_ids[row]:
                        continue
                    if ex_pat[row] is not None and self._patients[i] == ex_pat[row]:
                        continue
                    hits.append(Hit(i, self._patients[i], self._reports[i], float(s)))
                    if len(hits) == k:
                        break
                short |= len(hits) < k and fetch < len(self)
                out.append(hits)
            if not short:
                return out
            fetch = len(self)

    def _max_records_per_patient(self) -> int:
        """Most records of one patient (kept up to date by :meth:`add`/:meth:`load`, so a
        batched search over a large index does not recount)."""
        return self._max_per_patient

    def _count_patient(self, patient: int) -> None:
        self._per_patient[patient] = self._per_patient.get(patient, 0) + 1
        self._max_per_patient = max(self._max_per_patient, self._per_patient[patient])

    def save(self, folder: str | Path) -> Path:
        """Write ``index.faiss`` and the ``reports.json`` sidecar into ``folder``."""
        faiss = _faiss()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(folder / INDEX_FILE))
        sidecar = {
            "dim": self.dim,
            "records": {str(i): {"report": r, "patient_id": self._patients[i]}
                        for i, r in self._reports.items()},
        }
        (folder / SIDECAR_FILE).write_text(json.dumps(sidecar))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "ReportIndex":
        """Read an index written by :meth:`save` (JSON + FAISS only; nothing is unpickled)."""
        faiss = _faiss()
        folder = Path(folder)
        sidecar = json.loads((folder / SIDECAR_FILE).read_text())
        obj = cls(int(sidecar["dim"]))
        obj._index = faiss.read_index(str(folder / INDEX_FILE))
        for k, v in sidecar["records"].items():
            obj._reports[int(k)] = str(v["report"])
            obj._patients[int(k)] = int(v["patient_id"])
            obj._count_patient(int(v["patient_id"]))
        if obj._index.ntotal != len(obj._reports):
            raise ValueError(
                f"{folder}: index holds {obj._index.ntotal} vectors but sidecar "
                f"{len(obj._reports)} reports"
            )
        return obj
