"""Data section of the experiment config: sources, splits, sharding and normalisation policies.

Checks raise :class:`~ecglm.config.checks.ConfigError` naming the dotted key (``data.fs``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from ecglm.config.checks import require as _require


@dataclass
class NormalizeConfig:
    """How raw records become the canonical ``(12, T)`` float32 mV ECG (``data.normalize``).

    Every policy is explicit, part of the shard content hash and written to the shard
    manifest. Steps run in this order: lead matching (case-insensitive) -> non-finite values ->
    amplitude plausibility -> filters (at the source rate) -> resampling -> crop/pad.
    """

    missing_leads: Literal["error", "mask"] = "error"
    """A canonical lead absent from the record: ``error`` rejects the record; ``mask`` fills it
    with zeros and marks it ``False`` in the record's ``lead_mask``."""
    min_leads: int = 1
    """With ``missing_leads: mask``: records with fewer canonical leads present are rejected."""
    extra_leads: Literal["drop", "error"] = "drop"
    """Channels that are not one of the 12 leads (Frank ``vx/vy/vz``, ``MLII`` ...): ``drop``
    them (listed in the record metadata) or reject the record."""
    amplitude_policy: Literal["reject", "flag"] = "reject"
    """Implausible amplitude (wrong gain/units): ``reject`` the record, or keep it and add a
    flag (never used silently)."""
    max_abs_mv: float = 25.0
    """Largest plausible ``|x - median|`` of any lead, mV (int16 microvolt shards clip at
    32.767 mV)."""
    min_peak_to_peak_mv: float = 0.05
    """The largest peak-to-peak amplitude over the leads must reach this, mV (a header gain
    1000x too large gives ~0.002 mV)."""
    nonfinite: Literal["reject", "interpolate", "zero"] = "reject"
    """NaN/Inf samples: ``reject`` the record, ``interpolate`` linearly between finite
    neighbours, or set them to ``zero``; repaired records are flagged."""
    max_nonfinite_fraction: float = 0.1
    """``interpolate``/``zero``: a lead with a larger non-finite fraction counts as missing."""
    resample_method: Literal["polyphase", "fft"] = "polyphase"
    """Anti-aliased resampling to ``data.fs``: ``polyphase`` (``scipy.signal.resample_poly``,
    Kaiser-windowed FIR) or ``fft`` (``scipy.signal.resample``, ideal low-pass)."""
    crop: Literal["start", "center"] = "start"
    """Which ``data.seconds`` window of a longer record is kept."""
    pad: Literal["zero", "edge"] = "zero"
    """How a shorter record is padded at the end (``zero`` or repeat the last sample)."""
    min_seconds: float = 1.0
    """Records shorter than this (s) are rejected."""
    baseline_filter: bool = False
    """Remove baseline wander with a zero-phase Butterworth high-pass at
    ``baseline_cutoff_hz``."""
    baseline_cutoff_hz: float = 0.5
    """High-pass cut-off of the baseline filter, Hz."""
    bandpass: Optional[list[float]] = None
    """``[lo, hi]`` Hz zero-phase Butterworth band-pass, or ``null`` for none."""
    filter_order: int = 4
    """Butterworth order of the baseline and band-pass filters."""
    powerline_hz: Optional[int] = None
    """Notch filter at 50 or 60 Hz (``null``: none); skipped when above the Nyquist rate of the
    source (anti-aliasing removes it)."""

    def __post_init__(self) -> None:
        key = "data.normalize"
        _require(1 <= self.min_leads <= 12, f"{key}.min_leads", "must be in [1, 12]")
        _require(self.max_abs_mv > 0, f"{key}.max_abs_mv", "must be > 0 mV")
        _require(self.min_peak_to_peak_mv >= 0, f"{key}.min_peak_to_peak_mv", "must be >= 0 mV")
        _require(self.min_peak_to_peak_mv < self.max_abs_mv, f"{key}.min_peak_to_peak_mv",
                 "must be < data.normalize.max_abs_mv")
        _require(0.0 <= self.max_nonfinite_fraction <= 1.0, f"{key}.max_nonfinite_fraction",
                 "must be in [0, 1]")
        _require(self.min_seconds >= 0, f"{key}.min_seconds", "must be >= 0 s")
        _require(self.baseline_cutoff_hz > 0, f"{key}.baseline_cutoff_hz", "must be > 0 Hz")
        _require(self.bandpass is None or (len(self.bandpass) == 2
                                           and 0 < self.bandpass[0] < self.bandpass[1]),
                 f"{key}.bandpass", "must be null or [lo, hi] with 0 < lo < hi (Hz)")
        _require(1 <= self.filter_order <= 8, f"{key}.filter_order", "must be in [1, 8]")
        _require(self.powerline_hz in (None, 50, 60), f"{key}.powerline_hz",
                 "must be null, 50 or 60")


@dataclass
class DataConfig:
    """Where ECGs and questions come from and how they are sharded."""

    dataset: Literal["ptbxl", "ludb", "cinc2021", "mimic"] = "ptbxl"
    """Catalog to shard: ``ptbxl`` (+ ECG-QA), ``mimic`` (``mimic_root``; QA shards from the
    ECG-QA MIMIC-IV-ECG release when found, see ``qa_layout``), ``ludb`` / ``cinc2021``
    (``<shared_root>/<dataset>``; record shards only). Datasets other than ``ptbxl`` get a
    seeded patient-level record split (a release ECG-QA layout's official splits win) and need
    ``source`` auto/shared and ``qa_split: seeded`` (see :mod:`ecglm.data.datasets`)."""
    mimic_root: Optional[str] = None
    """MIMIC-IV-ECG folder (``record_list.csv``, ``files/``...); required for ``mimic``."""
    max_records: Optional[int] = None
    """Non-PTB-XL datasets: first N records by record id (``null``: all; PTB-XL: max_ecg_id)."""
    source: Literal["auto", "shared", "synthetic"] = "auto"
    """``auto``: use ``shared_root`` when it holds PTB-XL, else the synthetic set."""
    shared_root: str = "../shared/data"
    """Folder with ``ptbxl/`` and ``ecgqa/`` (see ../shared/data/README.md)."""
    max_ecg_id: Optional[int] = 300
    """Use PTB-XL records with ``ecg_id <= max_ecg_id`` (and QA items whose ECGs are all there);
    ``null``: every record of ``ptbxl_database.csv`` whose files exist. Rows whose files are
    missing are counted in the shard manifest and listed in ``records_missing.jsonl``."""
    ptbxl_rate: Literal[100, 500] = 500
    """PTB-XL files to read: ``500`` (``records500/``, ``filename_hr``) or ``100``
    (``records100/``, ``filename_lr``); records are resampled to ``fs`` either way."""
    qa_variant: Literal["template", "paraphrased"] = "template"
    """Which ECG-QA question wording to use."""
    qa_layout: Literal["auto", "curated", "release"] = "auto"
    """Where ECG-QA items come from (:mod:`ecglm.data.qa_source`): ``curated``: the subset file
    ``<qa_root>/ptbxl/{qa_variant}_ecgid_le300.json`` (split by ``qa_split``); ``release``: the
    official release layout ``<qa_root>/<dataset>/{qa_variant}/{train,valid,test}/*.json`` (or
    ``<qa_root>/release/<dataset>/...``), every shard file of every split, items keep their
    official split; ``auto``: curated when its file exists, else the release layout when found,
    else no QA items (``dataset`` other than ``ptbxl``) or an error (``ptbxl``)."""
    qa_root: Optional[str] = None
    """Folder holding the ECG-QA datasets (``ptbxl/``, ``mimic-iv-ecg/``); ``null``:
    ``<data root>/ecgqa`` (the PTB-XL data root; ``<shared_root>/ecgqa`` for ``mimic``)."""
    qa_split: Literal["official", "seeded", "strat_fold"] = "seeded"
    """``official``: ECG-QA's split lists; ``seeded``: patient-level split with the fractions
    below; ``strat_fold``: PTB-XL's folds (1-8 train, 9 valid, 10 test; patient-level)."""
    valid_fraction: float = 0.1
    """Fraction of patients in the validation split (``qa_split: seeded``)."""
    test_fraction: float = 0.2
    """Fraction of patients in the test split (``qa_split: seeded``)."""
    fs: int = 500
    """Target sampling rate in Hz."""
    seconds: float = 10.0
    """Target record length in seconds (crop/pad)."""
    synthetic_records: int = 120
    """Number of simulated records when the synthetic fallback is used."""
    synthetic_root: str = ".cache/synthetic"
    """Where the synthetic dataset is written (PTB-XL + ECG-QA layout)."""
    synthetic_fs: Optional[int] = None
    """Sampling rate of the simulated source records in Hz (None: ``data.fs``); e.g. 500 with
    ``fs: 100`` makes the shards resample, as PTB-XL's 500 Hz files do."""
    shard_dir: str = ".cache/shards"
    """Root folder of Parquet shards; a sub-folder per content hash."""
    records_per_shard: int = 64
    """Rows per Parquet file."""
    shard_compression: Literal["none", "lz4", "snappy", "zstd"] = "none"
    """Parquet compression of the shards. Signals are already compact int16 microvolts;
    ``none`` reads fastest from local disk or page cache (epochs read shards many times),
    ``lz4``/``zstd`` make them ~40%/55% smaller for slow shared storage."""
    max_items: Optional[int] = None
    """Cap on the number of QA items (after filtering), ``null`` for all."""
    scp_min_likelihood: float = 0.0
    """PTB-XL labels: keep diagnostic SCP statements with likelihood >= this (0-100; PTB-XL's
    own example code keeps all, i.e. 0). Form and rhythm statements carry no likelihood."""
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    """Reader normalisation policies (see :class:`NormalizeConfig`)."""

    def __post_init__(self) -> None:
        _require(self.max_ecg_id is None or self.max_ecg_id > 0, "data.max_ecg_id",
                 "must be null (all records) or > 0")
        _require(self.qa_layout != "curated" or self.dataset == "ptbxl", "data.qa_layout",
                 "'curated' files exist for PTB-XL only; use 'release' or 'auto' for "
                 f"data.dataset {self.dataset!r}")
        _require(0.0 <= self.valid_fraction < 1.0, "data.valid_fraction", "must be in [0, 1)")
        _require(0.0 < self.test_fraction < 1.0, "data.test_fraction", "must be in (0, 1)")
        _require(
            self.valid_fraction + self.test_fraction < 1.0,
            "data.test_fraction",
            "valid_fraction + test_fraction must be < 1",
        )
        _require(self.fs > 0, "data.fs", "must be > 0 Hz")
        _require(self.seconds > 0, "data.seconds", "must be > 0 s")
        _require(self.synthetic_records >= 10, "data.synthetic_records", "must be >= 10")
        _require(self.synthetic_fs is None or self.synthetic_fs >= 50, "data.synthetic_fs",
                 "must be null or >= 50 (Hz)")
        _require(self.records_per_shard > 0, "data.records_per_shard", "must be > 0")
        _require(0.0 <= self.scp_min_likelihood <= 100.0, "data.scp_min_likelihood",
                 "must be in [0, 100]")
        other = self.dataset != "ptbxl"
        _require(not other or (self.source != "synthetic" and self.qa_split == "seeded"),
                 "data.dataset", f"{self.dataset!r} needs data.source auto/shared (synthetic "
                 f"simulates PTB-XL only) and data.qa_split 'seeded' (no PTB-XL folds)")
        _require(self.max_records is None or (other and self.max_records > 0),
                 "data.max_records", "must be > 0, and only for data.dataset != 'ptbxl'")
        _require(self.dataset != "mimic" or bool(self.mimic_root), "data.mimic_root",
                 "required when data.dataset is 'mimic' (the MIMIC-IV-ECG folder)")
        nyquist = self.fs / 2.0
        _require(self.normalize.bandpass is None or self.normalize.bandpass[1] < nyquist,
                 "data.normalize.bandpass", f"upper edge must be < data.fs / 2 = {nyquist} Hz")
        _require(self.normalize.baseline_cutoff_hz < nyquist, "data.normalize.baseline_cutoff_hz",
                 f"must be < data.fs / 2 = {nyquist} Hz")

    @property
    def n_samples(self) -> int:
        """Target samples per lead, ``fs * seconds``."""
        return int(round(self.fs * self.seconds))
