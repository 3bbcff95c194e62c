"""Choose where ECGs and questions come from: the shared PTB-XL/ECG-QA copy or the simulator
(``data.dataset: ptbxl``), or the folder of another catalog (LUDB, CinC 2021, MIMIC-IV-ECG)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ecglm.config.schema import DataConfig
from ecglm.data.synthetic import marker_for, read_marker, write_synthetic_dataset


@dataclass
class DataSource:
    """A data root: for ``data.dataset: ptbxl`` one holding ``ptbxl/`` and ``ecgqa/ptbxl/``
    (PTB-XL + ECG-QA layout), else the dataset's own folder (:func:`dataset_root`)."""

    root: Path
    kind: Literal["shared", "synthetic"]


class DataSourceError(FileNotFoundError):
    """The configured data source is not available (names the config key and the path)."""


def has_ptbxl(root: Path) -> bool:
    """Whether ``root`` holds ``ptbxl/ptbxl_database.csv``."""
    return (Path(root) / "ptbxl" / "ptbxl_database.csv").is_file()


def ensure_synthetic(root: Path, n_records: int, seed: int, fs: int, seconds: float) -> Path:
    """Write the synthetic dataset at ``root`` unless a complete one with the same
    ``n_records``/``seed``/``fs``/``seconds`` (marker file) is already there."""
    if read_marker(root) != marker_for(n_records, seed, fs, seconds):
        write_synthetic_dataset(root, n_records, seed, fs=fs, seconds=seconds)
    return root


DATASET_MARKERS: dict[str, str] = {"ludb": "ludb.csv", "cinc2021": "*.hea",
                                    "mimic": "record_list.csv"}
"""A file (glob) that must exist in the root of each non-PTB-XL dataset."""


def dataset_root(cfg: DataConfig) -> Path:
    """Folder of a non-PTB-XL ``cfg.dataset``: ``<shared_root>/ludb``,
    ``<shared_root>/cinc2021`` or ``mimic_root`` (relative paths from the current directory).

    Raises:
        DataSourceError: the folder or its marker file (:data:`DATASET_MARKERS`) is missing;
            names ``data.shared_root`` or ``data.mimic_root``.
        ValueError: ``cfg.dataset`` is ``ptbxl`` (use :func:`resolve_source`).
    """
    if cfg.dataset == "ptbxl":
        raise ValueError("data.dataset: dataset_root() is for datasets other than 'ptbxl'")
    if cfg.dataset == "mimic":
        key, root = "data.mimic_root", Path(cfg.mimic_root or "").resolve()
    else:
        key, root = "data.shared_root", Path(cfg.shared_root).resolve() / cfg.dataset
    marker = DATASET_MARKERS[cfg.dataset]
    if not root.is_dir() or not any(root.glob(marker)):
        raise DataSourceError(f"{key}: {root / marker} not found (data.dataset is "
                              f"{cfg.dataset!r})")
    return root


def resolve_source(cfg: DataConfig, seed: int) -> DataSource:
    """Resolve ``cfg.source`` to a concrete data root.

    * ``shared``: ``cfg.shared_root`` (must hold ``ptbxl/ptbxl_database.csv``);
    * ``synthetic``: ``cfg.synthetic_root``, written once for (``synthetic_records``, ``seed``,
      ``fs``, ``seconds``) and reused afterwards;
    * ``auto``: shared when present, else synthetic.

    Relative paths are taken relative to the current working directory. For
    ``cfg.dataset`` other than ``ptbxl`` the source is always ``shared``:
    :func:`dataset_root`.

    Raises:
        DataSourceError: ``source: shared`` and the shared PTB-XL catalog is missing, or the
            folder of a non-PTB-XL dataset is missing.
    """
    if cfg.dataset != "ptbxl":
        return DataSource(root=dataset_root(cfg), kind="shared")
    shared = Path(cfg.shared_root).resolve()
    if cfg.source == "shared" or (cfg.source == "auto" and has_ptbxl(shared)):
        if not has_ptbxl(shared):
            raise DataSourceError(
                f"data.shared_root: {shared / 'ptbxl' / 'ptbxl_database.csv'} not found "
                f"(data.source is 'shared'; use 'auto' or 'synthetic' to simulate data)")
        return DataSource(root=shared, kind="shared")
    root = Path(cfg.synthetic_root).resolve()
    ensure_synthetic(root, cfg.synthetic_records, seed, cfg.synthetic_fs or cfg.fs, cfg.seconds)
    return DataSource(root=root, kind="synthetic")
