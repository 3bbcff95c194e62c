"""Dataset catalogs besides PTB-XL (:mod:`ecglm.data.ptbxl`): LUDB, CinC 2020/2021,
MIMIC-IV-ECG. Each returns a DataFrame with at least ``record_id``, ``patient_id`` and ``path``
(record path without extension, readable by :func:`ecglm.data.readers.read_record`)."""

from ecglm.data.catalogs.cinc2021 import load_cinc_catalog, load_dx_mapping
from ecglm.data.catalogs.ludb import load_ludb_catalog
from ecglm.data.catalogs.mimic import clean_report, load_mimic_catalog

__all__ = ["clean_report", "load_cinc_catalog", "load_dx_mapping", "load_ludb_catalog",
           "load_mimic_catalog"]
