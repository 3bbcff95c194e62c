"""Typed rows of a Parquet split, read in batches on demand instead of all at once.

:class:`ParquetRows` is a read-only ``Sequence`` over a split's Parquet file or folder in
``sample_id`` order: ``len()`` comes from the footers, iteration reads one batch of rows at a
time (only that batch's signals are in memory), indexing and slicing read just the rows asked
for. Iterating twice reads the files twice; nothing is cached besides the ``sample_id`` column.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Iterator, overload

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

BATCH_ROWS = 256
"""Rows decoded per read while iterating."""


def parquet_files(path: Path) -> list[Path]:
    """``path`` itself (a file) or its ``*.parquet`` files sorted by name (a folder)."""
    path = Path(path)
    return [path] if path.is_file() else sorted(path.glob("*.parquet"))


class ParquetRows(Sequence):
    """Rows of a Parquet split in ``sample_id`` order, converted by ``to_rows``.

    Args:
        path: a Parquet file or a folder of them.
        to_rows: records (``list[dict]``, one per Parquet row) -> typed rows, one per record
            (for example ``task.rows`` followed by retrieved reports).
        columns: columns to read (``None``: all); leave out ``signals``/``signal`` when the
            rows need no ECG (baselines), then ``to_rows`` must fill it.
        batch_rows: rows per read while iterating.
    """

    def __init__(self, path: Path, to_rows: Callable[[list[dict[str, Any]]], list[Any]],
                 columns: list[str] | None = None, batch_rows: int = BATCH_ROWS) -> None:
        self.files = [f for f in parquet_files(path) if pq.ParquetFile(f).metadata.num_rows]
        self.to_rows, self.columns, self.batch_rows = to_rows, columns, batch_rows
        ids = [pq.read_table(f, columns=["sample_id"]).column("sample_id").to_numpy()
               for f in self.files]
        self._starts = np.cumsum([0] + [len(a) for a in ids])
        sid = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
        self._order = np.argsort(sid, kind="stable")  # global position -> flat row
        self._sorted = bool(np.all(np.diff(sid) >= 0)) if len(sid) else True

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __iter__(self) -> Iterator[Any]:
        if self._sorted:  # files already in sample_id order: read each file in batches
            for f in self.files:
                pf = pq.ParquetFile(f, memory_map=True)
                for rb in pf.iter_batches(batch_size=self.batch_rows, columns=self.columns):
                    yield from self.to_rows(rb.to_pylist())
            return
        for start in range(0, len(self), self.batch_rows):
            yield from self._take(self._order[start:start + self.batch_rows])

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return self._take(self._order[index])
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"row {index} out of range for {n} rows")
        return self._take(self._order[[index % n]])[0]

    def _take(self, flat: np.ndarray) -> list[Any]:
        """Typed rows at flat positions ``flat`` (file order), returned in ``flat``'s order."""
        if len(flat) == 0:
            return []
        file_of = np.searchsorted(self._starts, flat, side="right") - 1
        records: dict[int, dict[str, Any]] = {}
        for k in np.unique(file_of).tolist():
            local = flat[file_of == k] - self._starts[k]
            table: pa.Table = pq.read_table(self.files[k], columns=self.columns,
                                            memory_map=True)
            for pos, rec in zip(local.tolist(), table.take(local).to_pylist()):
                records[int(self._starts[k] + pos)] = rec
        return self.to_rows([records[int(i)] for i in flat.tolist()])
