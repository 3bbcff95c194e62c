"""Train/valid/test splits: seeded patient-level, or ECG-QA's official PTB-XL lists."""

from __future__ import annotations

from pathlib import Path
from typing import Hashable, Iterable, Literal

import numpy as np

Split = Literal["train", "valid", "test"]
SPLITS: tuple[str, ...] = ("train", "valid", "test")
FOLD_SPLITS: dict[int, str] = {**{f: "train" for f in range(1, 9)}, 9: "valid", 10: "test"}
"""PTB-XL convention: strat_fold 1-8 train, 9 valid, 10 test."""


def _count(fraction: float, n: int) -> int:
    """Patients for a split: ``round(fraction * n)``, at least 1 when ``fraction > 0``
    and there are enough patients to keep one for training."""
    k = int(round(fraction * n))
    return max(k, 1) if fraction > 0 and n >= 3 else k


def assign_splits(patient_ids: Iterable[Hashable], valid_fraction: float,
                  test_fraction: float, seed: int) -> dict[Hashable, str]:
    """Seeded patient-level split.

    The sorted unique patient ids are permuted with ``numpy.random.default_rng(seed)``; the
    first ``round(test_fraction * n)`` go to ``test``, the next ``round(valid_fraction * n)``
    to ``valid`` (each at least 1 when its fraction is > 0 and n >= 3), the rest to ``train``.

    Returns:
        ``{patient_id: "train" | "valid" | "test"}``; every record of a patient shares a split.

    Raises:
        ValueError: fractions outside [0, 1) or summing to >= 1.
    """
    if not (0 <= valid_fraction < 1 and 0 <= test_fraction < 1
            and valid_fraction + test_fraction < 1):
        raise ValueError(f"valid_fraction={valid_fraction}, test_fraction={test_fraction}: "
                         f"expected each in [0, 1) and a sum < 1")
    unique = sorted(set(patient_ids))
    n = len(unique)
    order = np.random.default_rng(seed).permutation(n)
    n_test = _count(test_fraction, n)
    n_valid = min(_count(valid_fraction, n), max(n - n_test - 1, 0))
    out: dict[Hashable, str] = {}
    for rank, idx in enumerate(order):
        split = "test" if rank < n_test else "valid" if rank < n_test + n_valid else "train"
        out[unique[int(idx)]] = split
    return out


def load_split_lists(folder: Path) -> dict[int, str]:
    """ECG-QA's split lists ``<folder>/{train,valid,test}_ecgs.tsv`` (``folder`` is
    ``ecgqa/ptbxl`` or a release dataset folder); a missing list contributes nothing.

    Each file has no header and two tab-separated integer columns: row index, ecg_id.

    Returns:
        ``{ecg_id: split}`` (empty when no list exists).

    Raises:
        ValueError: a malformed line, or an ecg_id listed in two splits (names file and line).
    """
    out: dict[int, str] = {}
    for split in SPLITS:
        path = Path(folder) / f"{split}_ecgs.tsv"
        if not path.is_file():
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split("\t")
            try:
                if len(parts) != 2:
                    raise ValueError
                ecg_id = int(parts[1])
            except ValueError:
                raise ValueError(f"{path}:{lineno}: expected '<index>\\t<ecg_id>', "
                                 f"got {line!r}") from None
            if ecg_id in out and out[ecg_id] != split:
                raise ValueError(f"{path}:{lineno}: ecg_id {ecg_id} already in split "
                                 f"{out[ecg_id]!r}")
            out[ecg_id] = split
    return out


def load_official_splits(root: Path) -> dict[int, str]:
    """ECG-QA's PTB-XL split lists ``<root>/ecgqa/ptbxl/{train,valid,test}_ecgs.tsv``
    (:func:`load_split_lists`).

    Raises:
        FileNotFoundError: a list is missing.
        ValueError: a malformed line, or an ecg_id listed in two splits (names file and line).
    """
    folder = Path(root) / "ecgqa" / "ptbxl"
    for split in SPLITS:
        if not (folder / f"{split}_ecgs.tsv").is_file():
            raise FileNotFoundError(f"{folder / f'{split}_ecgs.tsv'}: ECG-QA split list not "
                                    f"found (data.qa_split is 'official')")
    return load_split_lists(folder)


def record_splits(ecg_ids: list[int], patient_ids: list[int], strat_folds: list[int],
                  mode: str, valid_fraction: float, test_fraction: float, seed: int,
                  root: Path) -> dict[int, str]:
    """Split of every record.

    ``seeded``: the split of its patient (:func:`assign_splits`); ``strat_fold``: PTB-XL's
    folds (:data:`FOLD_SPLITS`); ``official``: ECG-QA's list, records in no list fall back to
    the strat_fold convention.
    """
    if mode == "seeded":
        by_patient = assign_splits(patient_ids, valid_fraction, test_fraction, seed)
        return {e: by_patient[p] for e, p in zip(ecg_ids, patient_ids)}
    if mode == "strat_fold":
        bad = sorted({f for f in strat_folds if f not in FOLD_SPLITS})
        if bad:
            raise ValueError(f"data.qa_split: strat_fold: folds {bad[:5]} outside 1-10")
        return {e: FOLD_SPLITS[f] for e, f in zip(ecg_ids, strat_folds)}
    if mode == "official":
        official = load_official_splits(root)
        return {e: official.get(e, FOLD_SPLITS.get(f, "train"))
                for e, f in zip(ecg_ids, strat_folds)}
    raise ValueError(f"data.qa_split: expected 'seeded', 'strat_fold' or 'official', "
                     f"got {mode!r}")
