"""Choose where ECGs and questions come from: the shared PTB-XL/ECG-QA copy or the simulator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ecglm.config.schema import DataConfig
from ecglm.data.synthetic import marker_for, read_marker, write_synthetic_dataset


@dataclass
class DataSource:
    """A data root holding ``ptbxl/`` and ``ecgqa/ptbxl/`` (PTB-XL + ECG-QA layout)."""

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


def resolve_source(cfg: DataConfig, seed: int) -> DataSource:
    """Resolve ``cfg.source`` to a concrete data root.

    * ``shared``: ``cfg.shared_root`` (must hold ``ptbxl/ptbxl_database.csv``);
    * ``synthetic``: ``cfg.synthetic_root``, written once for (``synthetic_records``, ``seed``,
      ``fs``, ``seconds``) and reused afterwards;
    * ``auto``: shared when present, else synthetic.

    Relative paths are taken relative to the current working directory.

    Raises:
        DataSourceError: ``source: shared`` and the shared PTB-XL catalog is missing.
    """
    shared = Path(cfg.shared_root).resolve()
    if cfg.source == "shared" or (cfg.source == "auto" and has_ptbxl(shared)):
        if not has_ptbxl(shared):
            raise DataSourceError(
                f"data.shared_root: {shared / 'ptbxl' / 'ptbxl_database.csv'} not found "
                f"(data.source is 'shared'; use 'auto' or 'synthetic' to simulate data)")
        return DataSource(root=shared, kind="shared")
    root = Path(cfg.synthetic_root).resolve()
    ensure_synthetic(root, cfg.synthetic_records, seed, cfg.fs, cfg.seconds)
    return DataSource(root=root, kind="synthetic")
