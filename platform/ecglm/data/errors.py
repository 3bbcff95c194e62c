"""Typed errors of the data layer."""

from __future__ import annotations


class RecordError(ValueError):
    """One ECG record (or QA item) cannot be used.

    Attributes:
        record: record identifier (file path without extension, or an id such as ``ecg:137``).
        field: what is wrong (``file``, ``units``, ``leads``, ``signal``, ``fs`` ...).
        reason: human-readable reason naming the expected value.

    ``str(err) == "record <record>: <field>: <reason>"``.
    """

    def __init__(self, record: str, field: str, reason: str) -> None:
        self.record = str(record)
        self.field = field
        self.reason = reason
        super().__init__(f"record {self.record}: {field}: {reason}")

    def __reduce__(self):  # keeps the attributes when pickled across Ray workers
        return (type(self), (self.record, self.field, self.reason))


class CatalogError(ValueError):
    """A catalog/metadata file (CSV, JSON) is malformed.

    Attributes:
        source: the file (and item, e.g. ``train.json: item 17``).
        field: the column/key at fault.
        reason: what was expected.

    ``str(err) == "<source>: <field>: <reason>"``.
    """

    def __init__(self, source: str, field: str, reason: str) -> None:
        self.source = str(source)
        self.field = field
        self.reason = reason
        super().__init__(f"{self.source}: {field}: {reason}")

    def __reduce__(self):  # keeps the attributes when pickled across Ray workers
        return (type(self), (self.source, self.field, self.reason))
