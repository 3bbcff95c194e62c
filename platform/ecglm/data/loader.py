"""Fast epoch reading of record shards: batches of float32 ``(B, 12, T)`` mV tensors.

The int16 signal column of each Parquet file is viewed as ``(n, 12, T)`` int16 without copying
(the Arrow binary buffer) and converted to float32 mV in one pass per ECG, while a background
thread reads the next file. Shuffling is seeded per
epoch: the file order and the rows inside each file are permuted with
``numpy.random.default_rng(seed + epoch)`` (a block shuffle; the QA training loop shuffles with
Ray Data's ``local_shuffle_seed = seed + epoch`` instead, see ``ecglm.train.loop``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ecglm.data.canonical import LEADS

MICROVOLT = np.float32(1e-3)
"""mV per stored int16 unit."""


def signal_chunks(column: pa.ChunkedArray | pa.Array, n_samples: int) -> list[np.ndarray]:
    """Zero-copy int16 ``(n_i, 12, n_samples)`` views, one per Arrow chunk of a binary signal
    column (one ECG per row); the chunks' row counts add up to the column length.

    Raises:
        ValueError: a row does not hold ``12 * n_samples`` int16 values.
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    row_bytes = len(LEADS) * n_samples * 2
    parts = []
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32)[chunk.offset:
                                                                    chunk.offset + len(chunk) + 1]
        if not np.all(np.diff(offsets) == row_bytes):
            raise ValueError(f"signal: expected {row_bytes} bytes per row "
                             f"(12 leads x {n_samples} int16), got sizes "
                             f"{sorted(set(np.diff(offsets).tolist()))[:5]}")
        data = np.frombuffer(chunk.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
        parts.append(data.view("<i2").reshape(len(chunk), len(LEADS), n_samples))
    return parts


def decode_signal_column(column: pa.ChunkedArray | pa.Array, n_samples: int) -> np.ndarray:
    """int16 ``(n, 12, n_samples)`` array of a binary signal column (one ECG per row); a view
    without copying when the column has one chunk.

    Raises:
        ValueError: a row does not hold ``12 * n_samples`` int16 values.
    """
    parts = signal_chunks(column, n_samples)
    if not parts:
        return np.zeros((0, len(LEADS), n_samples), dtype="<i2")
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def shard_files(records: Path) -> list[Path]:
    """Parquet files of a records folder, sorted by name."""
    files = sorted(Path(records).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{records}: no *.parquet record shards")
    return files


def iter_record_batches(records: Path, batch_size: int, seed: int = 0, epoch: int = 0,
                        shuffle: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    """One epoch over a records shard folder.

    Args:
        records: ``<shard root>/records``.
        batch_size: ECGs per batch (the last batch of each file may be smaller).
        seed, epoch: the permutation is ``default_rng(seed + epoch)``: the same for the same
            pair, different across epochs.
        shuffle: ``False`` keeps file and row order.

    Yields:
        ``{"ecg_id": int64 (B,), "patient_id": int64 (B,), "signal": float32 (B, 12, T) mV}``.
    """
    rng = np.random.default_rng(seed + epoch)
    files = shard_files(records)
    order = [int(k) for k in (rng.permutation(len(files)) if shuffle else range(len(files)))]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ecglm-shard-read") as pool:
        pending = pool.submit(_read, files[order[0]]) if order else None
        for pos in range(len(order)):
            table = pending.result()
            # read the next file while this one is decoded (pyarrow releases the GIL)
            pending = pool.submit(_read, files[order[pos + 1]]) if pos + 1 < len(order) else None
            if table.num_rows == 0:
                continue
            yield from _batches(table, rng, batch_size, shuffle)


def _read(path: Path) -> pa.Table:
    return pq.read_table(path, columns=["ecg_id", "patient_id", "n_samples", "signal"],
                         memory_map=True)


def _batches(table: pa.Table, rng: np.random.Generator, batch_size: int,
             shuffle: bool) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of one shard file, rows permuted with ``rng`` when ``shuffle``."""
    n_samples = int(table.column("n_samples")[0].as_py())
    parts = signal_chunks(table.column("signal"), n_samples)  # no copy across row groups
    where = [(c, i) for c, part in enumerate(parts) for i in range(len(part))]
    ids = table.column("ecg_id").to_numpy()
    pids = table.column("patient_id").to_numpy()
    rows = rng.permutation(len(ids)) if shuffle else np.arange(len(ids))
    for start in range(0, len(rows), batch_size):
        idx = rows[start:start + batch_size]
        x = np.empty((len(idx), len(LEADS), n_samples), dtype=np.float32)
        for j, i in enumerate(idx):  # one pass: int16 -> float32 mV, in shuffled order
            c, k = where[i]
            np.multiply(parts[c][k], MICROVOLT, out=x[j], dtype=np.float32)
        yield {"ecg_id": torch.from_numpy(ids[idx].astype(np.int64)),
               "patient_id": torch.from_numpy(pids[idx].astype(np.int64)),
               "signal": torch.from_numpy(x)}
