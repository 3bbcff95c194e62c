"""12-lead paper image rendering: geometry, grid, traces, errors, speed."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ecglm.data.records import LEADS
from ecglm.features import SignalError
from ecglm.render import GRID_LAYOUT, layout_12lead, render_12lead, save_png
from ecglm.render import image as render_image
from tests import helpers as synth

BLACK = np.array(render_image.TRACE_RGB)


def _is(img: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.all(img == np.asarray(rgb, dtype=np.uint8), axis=-1)


@pytest.fixture(scope="module")
def ecg() -> tuple[np.ndarray, int]:
    x, fs, _ = synth.synthetic_ecg()
    return x, fs


def test_shape_dtype_square(ecg) -> None:
    x, fs = ecg
    img = render_12lead(x, fs)
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8
    assert render_12lead(x, fs, size=224).shape == (224, 224, 3)
    assert render_12lead(x, fs, size=(300, 600)).shape == (300, 600, 3)


def test_paper_grid(ecg) -> None:
    x, fs = ecg
    img = render_12lead(x, fs, size=1040)  # 4 px per mm
    lay = layout_12lead(1040)
    assert lay.px_per_mm == pytest.approx(4.0)
    # top margin row (no trace): bold line every 5 mm, thin ones in between, paper elsewhere
    top = img[2]
    bold = [int(round(lay.x0 + 5 * k * lay.px_per_mm)) for k in range(10)]
    thin = [int(round(lay.x0 + (5 * k + 2) * lay.px_per_mm)) for k in range(10)]
    assert all(tuple(top[c]) == render_image.MAJOR_RGB for c in bold)
    assert all(tuple(top[c]) == render_image.MINOR_RGB for c in thin)
    assert tuple(top[int(round(lay.x0 + 0.5 * lay.px_per_mm))]) == render_image.PAPER_RGB
    # the paper dominates the image; grid lines cover a fair share
    assert _is(img, render_image.PAPER_RGB).mean() > 0.4
    assert 0.02 < _is(img, render_image.MAJOR_RGB).mean() < 0.3


def test_flat_line_draws_straight_traces() -> None:
    img = render_12lead(np.zeros((12, 5000), dtype=np.float32), 500, size=520, labels=False)
    lay = layout_12lead(520)
    black = np.all(img == BLACK, axis=-1)
    ys, xs = np.nonzero(black)
    centres = np.round(lay.row_centres).astype(int)
    # every black pixel is on a row's 0 mV line or on a column-separator tick
    ticks = np.round([lay.x0 + c * lay.col_width for c in range(1, 4)]).astype(int)
    on_line = np.min(np.abs(ys[:, None] - centres[None]), axis=1) <= 1
    on_tick = np.min(np.abs(xs[:, None] - ticks[None]), axis=1) <= 1
    assert np.all(on_line | on_tick)
    # and each row's line spans the 10 s (x0 .. x0 + 250 mm)
    x_end = int(lay.x_of(10.0 - 1 / 500))
    for y in centres:
        row = black[y - 1:y + 2].any(axis=0)
        assert row[int(lay.x0) + 1:x_end - 1].all()


def test_one_millivolt_is_ten_millimetres() -> None:
    x = np.zeros((12, 5000), dtype=np.float32)
    lead = LEADS.index("V1")  # row 0, column 2 (5.0-7.5 s)
    x[lead, 2750:3050] = 1.0  # a 1 mV plateau from 5.5 to 6.1 s (median stays 0)
    img = render_12lead(x, 500, size=520, labels=False)
    lay = layout_12lead(520)
    black = np.all(img == BLACK, axis=-1)
    y_up = int(round(lay.y_of(0, 1.0)))
    assert lay.row_centres[0] - y_up == pytest.approx(10 * lay.px_per_mm, abs=0.6)
    col = int(round(lay.x_of(5.8)))
    assert black[y_up - 1:y_up + 2, col].any()
    assert not black[int(lay.row_centres[0]) - 1:int(lay.row_centres[0]) + 2, col].any()
    assert GRID_LAYOUT[0][2] == "V1"


def test_labels_are_drawn(ecg) -> None:
    x, fs = ecg
    with_labels = render_12lead(x, fs)
    without = render_12lead(x, fs, labels=False)
    assert not np.array_equal(with_labels, without)
    assert (np.abs(with_labels.astype(int) - without.astype(int)).sum(axis=-1) > 0).sum() > 50


@pytest.mark.parametrize("bad, field", [
    (np.zeros((11, 5000)), "signal.shape"),
    (np.full((12, 5000), np.nan), "signal.values"),
])
def test_bad_input_is_typed(bad: np.ndarray, field: str) -> None:
    with pytest.raises(SignalError) as info:
        render_12lead(bad, 500)
    assert info.value.field == field


@pytest.mark.parametrize("size", [0, 10, (512,), (512, 512, 3), 512.5])
def test_bad_size(ecg, size: object) -> None:
    x, fs = ecg
    with pytest.raises(SignalError) as info:
        render_12lead(x, fs, size=size)  # type: ignore[arg-type]
    assert info.value.field == "size"


def test_short_record_and_save_png(tmp_path: Path) -> None:
    x, fs, _ = synth.synthetic_ecg(seconds=4.0)
    img = render_12lead(x, fs, size=256)
    path = save_png(img, tmp_path / "ecg.png")
    with Image.open(path) as im:
        assert im.size == (256, 256) and im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), img)
    with pytest.raises(SignalError):
        save_png(img[..., 0], tmp_path / "bad.png")


def test_fast_enough_for_training(ecg) -> None:
    x, fs = ecg
    render_12lead(x, fs)
    t0 = time.perf_counter()
    for _ in range(10):
        render_12lead(x, fs)
    assert (time.perf_counter() - t0) / 10 < 0.1  # ~5 ms on one idle core


def test_dense_samples_keep_narrow_spikes() -> None:
    """At 10 samples per pixel column the trace is thinned to min/max pairs: a one-sample
    1.5 mV spike must still reach its full height."""
    x = np.zeros((12, 5000), dtype=np.float32)
    x[LEADS.index("I"), 600] = 1.5  # row 0, column 0, t = 1.2 s
    img = render_12lead(x, 500, size=520, labels=False)
    lay = layout_12lead(520)
    black = np.all(img == BLACK, axis=-1)
    top, col = int(round(lay.y_of(0, 1.5))), int(round(lay.x_of(1.2)))
    assert black[top - 1:top + 2, col - 2:col + 3].any()
