"""Which ECG-QA items a shard build uses: the curated subset files or the official release.

Layouts (``data.qa_layout``; ``<qa_root>`` is ``data.qa_root``, by default ``<data root>/ecgqa``):

* ``curated``: ``<qa_root>/ptbxl/{variant}_ecgid_le300.json`` (one JSON list, PTB-XL only) with
  ``<qa_root>/ptbxl/answers_for_each_template.csv``. Items carry no split: each item takes the
  split of its ECGs (``data.qa_split``).
* ``release``: the layout of the published ECG-QA release, for ``ptbxl`` and ``mimic-iv-ecg``:
  ``<dataset>/{template,paraphrased}/{train,valid,test}/<shard>.json`` (every shard file of a
  split, in name order; a ``<split>.json`` file instead of the folder is accepted too) with
  ``<dataset>/answers_for_each_template.csv`` and, for PTB-XL, ``{train,valid,test}_ecgs.tsv``.
  Looked for at ``<qa_root>/<dataset>/`` (an unpacked release) and
  ``<qa_root>/release/<dataset>/`` (the cut of ``../shared/data``). Items keep the split of the
  folder they were read from (the official split), whatever ``data.qa_split`` says.
* ``auto``: ``curated`` when its file exists, else ``release`` when found, else no items
  (datasets other than ``ptbxl``) or an error naming the paths searched (``ptbxl``).

Items whose ECGs are not all available (not in the catalog, or files missing) are counted per
split and listed (:class:`QASelection`); nothing is dropped without a count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from ecglm.config.schema import DataConfig
from ecglm.data.ecgqa import VARIANTS, QAItem, parse_item, read_template_classes
from ecglm.data.errors import CatalogError
from ecglm.data.splits import SPLITS, load_split_lists

QA_DATASET_DIRS: dict[str, str] = {"ptbxl": "ptbxl", "mimic": "mimic-iv-ecg"}
"""``data.dataset`` -> its ECG-QA dataset folder (the other datasets have no ECG-QA items)."""
CURATED_NAME = "{variant}_ecgid_le300.json"
TEMPLATE_CSV = "answers_for_each_template.csv"
CURATED_SPLIT = "all"
"""Count key of curated items (they get their split from their ECGs later)."""


class QASourceError(FileNotFoundError):
    """The ECG-QA files asked for are not there (names the config key and the paths searched)."""


@dataclass(frozen=True)
class QALayout:
    """Resolved ECG-QA source of one build."""

    kind: Literal["curated", "release"]
    dataset: str
    """ECG-QA dataset folder name: ``ptbxl`` or ``mimic-iv-ecg``."""
    folder: Path
    """Folder holding ``answers_for_each_template.csv`` (and the split lists, if any)."""
    variant: str
    files: dict[str, tuple[Path, ...]]
    """Split -> JSON files (``{"all": (file,)}`` for curated)."""

    def input_files(self) -> list[Path]:
        """Every file whose change must invalidate a build: the JSON files, the template CSV
        and the split lists."""
        extra = [self.folder / TEMPLATE_CSV, *(self.folder / f"{s}_ecgs.tsv" for s in SPLITS)]
        return sorted({*(f for fs in self.files.values() for f in fs),
                       *(f for f in extra if f.is_file())})


def qa_base(cfg: DataConfig, data_root: Path) -> Path:
    """``data.qa_root`` if set, else ``<data_root>/ecgqa`` for ``ptbxl`` (the shared or
    synthetic root) and ``<shared_root>/ecgqa`` for other datasets."""
    if cfg.qa_root:
        return Path(cfg.qa_root).resolve()
    root = Path(data_root) if cfg.dataset == "ptbxl" else Path(cfg.shared_root).resolve()
    return root / "ecgqa"


def _release_files(folder: Path, variant: str) -> dict[str, tuple[Path, ...]]:
    out: dict[str, tuple[Path, ...]] = {}
    for split in SPLITS:
        single = folder / variant / f"{split}.json"
        out[split] = ((single,) if single.is_file()
                      else tuple(sorted((folder / variant / split).glob("*.json"))))
    return out


def _release_candidates(base: Path, dataset: str) -> list[Path]:
    return [base / dataset, base / "release" / dataset]


def resolve_qa_layout(cfg: DataConfig, data_root: Path) -> Optional[QALayout]:
    """The ECG-QA source of ``cfg`` (see the module docstring), or ``None`` when ``auto`` finds
    nothing for a dataset other than ``ptbxl`` (or the dataset has no ECG-QA items).

    Raises:
        QASourceError: the layout asked for (or, for ``ptbxl``, any layout) is not found;
            names ``data.qa_layout``/``data.qa_root`` and the paths searched.
        ValueError: unknown ``data.qa_variant``.
    """
    if cfg.qa_variant not in VARIANTS:
        raise ValueError(f"data.qa_variant: expected one of {list(VARIANTS)}, "
                         f"got {cfg.qa_variant!r}")
    dataset = QA_DATASET_DIRS.get(cfg.dataset)
    if dataset is None:
        return None
    base = qa_base(cfg, data_root)
    curated = base / "ptbxl" / CURATED_NAME.format(variant=cfg.qa_variant)
    if cfg.qa_layout in ("auto", "curated") and dataset == "ptbxl" and curated.is_file():
        return QALayout("curated", dataset, curated.parent, cfg.qa_variant,
                        {CURATED_SPLIT: (curated,)})
    searched = [curated] if cfg.qa_layout != "release" and dataset == "ptbxl" else []
    if cfg.qa_layout in ("auto", "release"):
        for folder in _release_candidates(base, dataset):
            files = _release_files(folder, cfg.qa_variant)
            if any(files.values()):
                return QALayout("release", dataset, folder, cfg.qa_variant, files)
            searched.append(folder / cfg.qa_variant / "{train,valid,test}" / "*.json")
    if cfg.qa_layout == "auto" and dataset != "ptbxl":
        return None
    raise QASourceError(f"data.qa_layout: {cfg.qa_layout!r}: no ECG-QA {dataset} "
                        f"{cfg.qa_variant} items at " + ", ".join(map(str, searched))
                        + " (set data.qa_root to the folder holding the ECG-QA datasets)")


@dataclass
class QASelection:
    """ECG-QA items of a build: the usable ones and the count of the others."""

    layout: Optional[QALayout]
    items: list[QAItem] = field(default_factory=list)
    """Items whose ECGs are all available, in file order (train, valid, test for release)."""
    unavailable: list[dict] = field(default_factory=list)
    """``{"sample_id", "split", "missing_ecg_ids"}`` of every item left out."""
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """Split (``all`` for curated) -> ``{"files", "in", "available", "unavailable"}``."""

    def summary(self) -> dict:
        """Manifest block: layout, folder, variant and the counts (``in = available +
        unavailable`` per split)."""
        if self.layout is None:
            return {"layout": None, "items_in": 0, "items_available": 0,
                    "items_unavailable": 0, "per_split": {}}
        return {"layout": self.layout.kind, "dataset": self.layout.dataset,
                "folder": str(self.layout.folder), "variant": self.layout.variant,
                "items_in": sum(c["in"] for c in self.counts.values()),
                "items_available": len(self.items),
                "items_unavailable": len(self.unavailable), "per_split": self.counts}


def _read_json_list(path: Path) -> list:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CatalogError(str(path), "<root>", f"not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise CatalogError(str(path), "<root>", "expected a JSON list of items")
    return data


def load_qa_items(cfg: DataConfig, data_root: Path, available: set[int]) -> QASelection:
    """Read every ECG-QA item of the resolved layout and keep those whose ECGs are all in
    ``available`` (the catalog's ECG ids: PTB-XL ``ecg_id`` or MIMIC-IV-ECG ``study_id``).

    Args:
        cfg: the ``data`` section (``dataset``, ``qa_layout``, ``qa_root``, ``qa_variant``).
        data_root: the resolved data root (:func:`ecglm.data.source.resolve_source`).
        available: ECG ids that can be read.

    Returns:
        The :class:`QASelection` (empty when the dataset has no ECG-QA items).

    Raises:
        QASourceError: see :func:`resolve_qa_layout`.
        ValueError: a malformed item (names the file, the sample_id and the field) or a sample_id
            that occurs twice.
    """
    layout = resolve_qa_layout(cfg, data_root)
    sel = QASelection(layout)
    if layout is None:
        return sel
    classes = read_template_classes(layout.folder / TEMPLATE_CSV)
    seen: dict[int, str] = {}
    for split, files in layout.files.items():
        counts = {"files": len(files), "in": 0, "available": 0, "unavailable": 0}
        for path in files:
            for raw in _read_json_list(path):
                it = parse_item(raw, classes, str(path),
                                split if layout.kind == "release" else None)
                if it.sample_id in seen:
                    raise CatalogError(f"{path}: sample_id {it.sample_id}", "sample_id",
                                       f"already read from {seen[it.sample_id]}")
                seen[it.sample_id] = str(path)
                counts["in"] += 1
                missing = [e for e in it.ecg_ids if e not in available]
                if missing:
                    counts["unavailable"] += 1
                    sel.unavailable.append({"sample_id": it.sample_id, "split": split,
                                            "missing_ecg_ids": missing})
                else:
                    counts["available"] += 1
                    sel.items.append(it)
        sel.counts[split] = counts
    return sel


def qa_input_files(cfg: DataConfig, data_root: Path) -> list[Path]:
    """Files of the resolved ECG-QA layout (for the build's input fingerprint; ``[]`` when
    there is none)."""
    layout = resolve_qa_layout(cfg, data_root)
    return layout.input_files() if layout is not None else []


def release_record_splits(cfg: DataConfig, data_root: Path, ecg_ids: list[int],
                          fallback: dict[int, str]) -> dict[int, str]:
    """Record splits that agree with a release layout's official item splits.

    For a ``release`` layout each record takes, in order: its split in the dataset's
    ``{train,valid,test}_ecgs.tsv`` lists; the split of the items that use it (``test`` before
    ``valid`` before ``train`` when items of several splits share it: the items of the other
    splits are then quarantined by the shard build rather than leaking a test ECG into
    training); else ``fallback`` (PTB-XL's ``strat_fold`` rule, or the seeded patient split of
    other datasets). Curated layouts (or none) return ``fallback`` unchanged.
    """
    layout = resolve_qa_layout(cfg, data_root)
    if layout is None or layout.kind != "release":
        return dict(fallback)
    listed = load_split_lists(layout.folder)
    from_items: dict[int, str] = {}
    for split in ("test", "valid", "train"):
        for path in layout.files.get(split, ()):
            for raw in _read_json_list(path):
                ids = raw.get("ecg_id") if isinstance(raw, dict) else None
                for e in ids if isinstance(ids, list) else []:
                    if isinstance(e, int):
                        from_items.setdefault(e, split)
    return {e: listed.get(e) or from_items.get(e) or fallback[e] for e in ecg_ids}


def write_unavailable(sel: QASelection, path: Path) -> Path:
    """Write one JSON line per item left out (``sample_id``, ``split``, ``missing_ecg_ids``)."""
    with Path(path).open("w") as fh:
        for entry in sel.unavailable:
            fh.write(json.dumps(entry) + "\n")
    return Path(path)
