"""The FAISS side of :class:`~ecglm.retrieval.index.ReportIndex`: one index per kind, the ivf cell
count rule, query-time parameters, and moves between CPU and GPU.

Every kind ranks L2-normalised vectors by inner product (= cosine similarity) and stores the ECG
ids as FAISS ids:

* ``flat``: ``IndexIDMap(IndexFlatIP)``, exact.
* ``ivf``: ``IndexIVFFlat`` (inner product, spherical k-means cells; ids stored natively); must be
  trained before vectors are added. ``nprobe`` cells are scanned per query.
* ``hnsw``: ``IndexIDMap(IndexHNSWFlat)`` (inner product), ``hnsw_m`` links per node; built with an
  ``ef_construction`` candidate list, searched with ``ef_search``. CPU only.

faiss is imported lazily (faiss-cpu and faiss-gpu are alternative extras of the package).
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

IndexKind = Literal["flat", "ivf", "hnsw"]
KINDS: tuple[IndexKind, ...] = ("flat", "ivf", "hnsw")
GPU_KINDS: tuple[IndexKind, ...] = ("flat", "ivf")
"""Kinds moved to the GPU when asked (FAISS has no GPU HNSW)."""
MIN_POINTS_PER_CELL = 39
"""FAISS k-means warns below 39 training points per centroid: ``nlist <= N / 39``."""
TRAIN_POINTS_PER_CELL = 64
"""ivf k-means is trained on at most this many (seeded, sampled) vectors per cell."""
GPU_MAX_K = 2048
"""Largest ``k`` a FAISS GPU index searches in one call."""


def faiss_module() -> Any:
    """The ``faiss`` module (imported here, not at module import)."""
    import faiss

    return faiss


def gpu_available() -> bool:
    """Whether this faiss build has GPU support and sees at least one GPU."""
    faiss = faiss_module()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def ivf_nlist(requested: int, n_total: int, n_train: Optional[int] = None) -> tuple[int, str]:
    """Number of ivf cells for ``n_total`` indexed vectors trained on ``n_train`` (default:
    ``n_total``) vectors.

    Args:
        requested: ``retrieval.nlist`` (0: automatic, ``round(4 * sqrt(n_total))``).
        n_total: vectors the index will hold.
        n_train: vectors k-means is trained on.

    Returns:
        ``(nlist, note)``: ``nlist`` in ``[1, max(1, n_train // 39)]``; ``note`` says how it was
        chosen, and that it was reduced when the requested (or automatic) value was too large.
    """
    n_train = n_total if n_train is None else n_train
    cap = max(1, n_train // MIN_POINTS_PER_CELL)
    if requested > 0:
        want, how = requested, f"retrieval.nlist={requested}"
    else:
        want = max(1, round(4 * math.sqrt(max(n_total, 1))))
        how = f"auto 4*sqrt(N)={want} for N={n_total}"
    if want <= cap:
        return want, f"nlist={want} ({how})"
    return cap, (f"nlist={cap} REDUCED from {want} ({how}): {n_train} training vectors allow at "
                 f"most N/{MIN_POINTS_PER_CELL}={cap} cells")


def new_index(kind: IndexKind, dim: int, *, nlist: int = 1, hnsw_m: int = 32,
              ef_construction: int = 200) -> Any:
    """An empty CPU index of ``kind`` over ``dim``-wide vectors (ivf: untrained, ``nlist``
    cells; hnsw: ``hnsw_m`` links, ``ef_construction`` candidates while adding)."""
    faiss = faiss_module()
    if kind == "flat":
        return faiss.IndexIDMap(faiss.IndexFlatIP(dim))
    if kind == "ivf":
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.spherical = True  # centroids on the unit sphere (FAISS's default for IP)
        index.cp.max_points_per_centroid = max(TRAIN_POINTS_PER_CELL, 256)
        return index
    if kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = ef_construction
        return faiss.IndexIDMap(hnsw)  # the wrapper keeps ``hnsw`` alive
    raise ValueError(f"retrieval.index: must be one of {', '.join(KINDS)}, got {kind!r}")


def _inner(index: Any) -> Any:
    """The index under an ``IndexIDMap`` (downcast to its concrete class), else ``index``."""
    faiss = faiss_module()
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        return faiss.downcast_index(index.index)
    return index


def detect_kind(index: Any) -> IndexKind:
    """The kind of a CPU index built by :func:`new_index` (or read back from disk).

    Raises:
        ValueError: the index is none of the three layouts.
    """
    faiss = faiss_module()
    inner = _inner(index)
    if isinstance(inner, faiss.IndexHNSWFlat):
        return "hnsw"
    if isinstance(inner, faiss.IndexIVFFlat):
        return "ivf"
    if isinstance(inner, faiss.IndexFlat):
        return "flat"
    raise ValueError(f"index: unsupported FAISS index type {type(inner).__name__}")


def read_params(index: Any, kind: IndexKind) -> dict[str, int]:
    """Build and query parameters held by a CPU index: ivf ``nlist``/``nprobe``; hnsw
    ``hnsw_m``/``ef_construction``/``ef_search``; nothing for flat."""
    inner = _inner(index)
    if kind == "ivf":
        return {"nlist": int(inner.nlist), "nprobe": int(inner.nprobe)}
    if kind == "hnsw":
        return {"hnsw_m": int(inner.hnsw.nb_neighbors(1)),
                "ef_construction": int(inner.hnsw.efConstruction),
                "ef_search": int(inner.hnsw.efSearch)}
    return {}


def set_query_params(index: Any, kind: IndexKind, *, nprobe: Optional[int] = None,
                     ef_search: Optional[int] = None, nlist: Optional[int] = None,
                     on_gpu: bool = False) -> dict[str, int]:
    """Apply the query-time parameters of ``kind`` (ivf ``nprobe``, clamped to ``nlist`` when
    given; hnsw ``efSearch``); ``None`` keeps the index's value. Returns what was set."""
    faiss = faiss_module()
    space = faiss.GpuParameterSpace() if on_gpu else faiss.ParameterSpace()
    out: dict[str, int] = {}
    if kind == "ivf" and nprobe is not None:
        out["nprobe"] = max(1, min(int(nprobe), nlist or int(nprobe)))
        space.set_index_parameter(index, "nprobe", out["nprobe"])
    if kind == "hnsw" and ef_search is not None:
        out["ef_search"] = int(ef_search)
        space.set_index_parameter(index, "efSearch", out["ef_search"])
    return out


class GpuPlacement:
    """Holds the ``StandardGpuResources`` a GPU index needs for its lifetime."""

    def __init__(self, device: int = 0) -> None:
        self.device = device
        self.resources = faiss_module().StandardGpuResources()

    def to_gpu(self, index: Any) -> Any:
        """A GPU copy of a CPU flat/ivf index."""
        return faiss_module().index_cpu_to_gpu(self.resources, self.device, index)


def to_cpu(index: Any) -> Any:
    """A CPU copy of a GPU index (what :func:`faiss.write_index` takes)."""
    return faiss_module().index_gpu_to_cpu(index)
