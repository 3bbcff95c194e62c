"""Data layer: WFDB reading, PTB-XL catalog, ECG-QA items, synthetic fallback, splits, shards.

Canonical ECG: float32 ``(12, T)`` in mV, lead order :data:`LEADS`, ``fs`` in Hz.
"""

from ecglm.data.ecgqa import QAItem, candidate_options, load_ecgqa_items
from ecglm.data.errors import RecordError
from ecglm.data.ptbxl import load_ptbxl_catalog
from ecglm.data.records import LEADS, read_wfdb
from ecglm.data.shards import ShardSet, build_shards, decode_signals, encode_signals
from ecglm.data.source import DataSource, DataSourceError, resolve_source
from ecglm.data.splits import assign_splits, load_official_splits
from ecglm.data.synthetic import write_synthetic_dataset

__all__ = [
    "LEADS",
    "DataSource",
    "DataSourceError",
    "QAItem",
    "RecordError",
    "ShardSet",
    "assign_splits",
    "build_shards",
    "candidate_options",
    "decode_signals",
    "encode_signals",
    "load_ecgqa_items",
    "load_official_splits",
    "load_ptbxl_catalog",
    "read_wfdb",
    "resolve_source",
    "write_synthetic_dataset",
]
