"""Render a 12-lead ECG as a paper-style image (numpy + PIL, a few ms per image).

Layout (the usual 3x4 + rhythm printout): three rows of four 2.5 s columns

    I    aVR  V1  V4
    II   aVL  V2  V5
    III  aVF  V3  V6

where each lead shows its own 2.5 s slice of the same 10 s (column ``c`` covers
``[2.5 c, 2.5 (c + 1))`` s), plus a fourth row with lead II over the full 10 s. Paper speed
25 mm/s and gain 10 mm/mV, so one small square (1 mm) is 0.04 s by 0.1 mV and every fifth
line (5 mm = 0.2 s / 0.5 mV) is bold (under 1.5 px/mm, e.g. 224 px wide, only the bold
lines are drawn). The paper width (10 s plus margins) fills the image
width; squares stay square, so a square image gives tall rows (62.5 mm = 6.25 mV each).
Each lead is centred on its row by subtracting its median; traces may overlap the
neighbouring row like on paper and are clipped at the image border.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ecglm.data.canonical import LEADS
from ecglm.features.validation import SignalError, check_signal

PAPER_SPEED_MM_PER_S = 25.0
"""Horizontal scale: 25 mm per second (1 mm = 0.04 s)."""

GAIN_MM_PER_MV = 10.0
"""Vertical scale: 10 mm per millivolt (1 mm = 0.1 mV)."""

STRIP_SECONDS = 10.0
"""Seconds shown by the rhythm strip (the 3x4 panel covers the same span)."""

MARGIN_MM = 5.0
"""Paper margin on every side (mm)."""

GRID_LAYOUT: tuple[tuple[str, ...], ...] = (
    ("I", "aVR", "V1", "V4"),
    ("II", "aVL", "V2", "V5"),
    ("III", "aVF", "V3", "V6"),
)
"""Lead names of the 3x4 panel, by row then column."""

RHYTHM_LEAD = "II"
"""Lead of the 10 s rhythm strip (fourth row)."""

MIN_PX_PER_MM_FOR_MINOR = 1.5
"""Below this scale only the 5 mm lines are drawn (1 mm lines would cover the paper)."""

PAPER_RGB = (255, 244, 244)
MINOR_RGB = (251, 212, 212)
MAJOR_RGB = (236, 138, 138)
TRACE_RGB = (0, 0, 0)
LABEL_RGB = (0, 0, 90)


@dataclass(frozen=True)
class Layout:
    """Pixel geometry of a rendered image (all coordinates in pixels, floats).

    Attributes:
        height, width: image size.
        px_per_mm: scale of the paper.
        x0: x of time 0 (left end of every row).
        col_width: width of one 2.5 s column.
        row_centres: ``(4,)`` y of the 0 mV line of each row (row 3 = rhythm strip).
    """

    height: int
    width: int
    px_per_mm: float
    x0: float
    col_width: float
    row_centres: tuple[float, float, float, float]

    def x_of(self, seconds: np.ndarray | float) -> np.ndarray | float:
        """x pixel of a time (s) from the left end of a row."""
        return self.x0 + np.asarray(seconds) * PAPER_SPEED_MM_PER_S * self.px_per_mm

    def y_of(self, row: int, millivolts: np.ndarray | float) -> np.ndarray | float:
        """y pixel of a voltage (mV) in ``row`` (0-2 panel rows, 3 rhythm strip)."""
        return self.row_centres[row] - np.asarray(millivolts) * GAIN_MM_PER_MV * self.px_per_mm


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    """``(H, W)`` from an int (square) or a pair; both at least 64 px."""
    pair = (size, size) if isinstance(size, (int, np.integer)) else size
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(v, (int, np.integer)) and 64 <= v <= 8192 for v in pair)):
        raise SignalError("size", f"expected an int or (H, W) of 64..8192 pixels, got {size!r}")
    return int(pair[0]), int(pair[1])


def layout_12lead(size: int | tuple[int, int] = 512) -> Layout:
    """Geometry of :func:`render_12lead` for an image of ``size`` (int = square, or (H, W))."""
    h, w = _size(size)
    paper_w_mm = STRIP_SECONDS * PAPER_SPEED_MM_PER_S + 2 * MARGIN_MM
    scale = w / paper_w_mm
    x0 = MARGIN_MM * scale
    row_h = (h - 2 * x0) / 4.0
    centres = tuple(x0 + (r + 0.5) * row_h for r in range(4))
    return Layout(h, w, scale, x0, STRIP_SECONDS / 4 * PAPER_SPEED_MM_PER_S * scale,
                  centres)  # type: ignore[arg-type]


def _grid(layout: Layout) -> np.ndarray:
    """Paper background ``(H, W, 3)`` uint8 with 1 mm and bold 5 mm lines."""
    img = np.empty((layout.height, layout.width, 3), dtype=np.uint8)
    img[:] = PAPER_RGB
    step = layout.px_per_mm
    for axis, extent in ((1, layout.width), (0, layout.height)):
        k = np.arange(-int(layout.x0 / step) - 1, int(extent / step) + 2)
        pos = np.rint(layout.x0 + k * step).astype(np.int64)
        keep = (pos >= 0) & (pos < extent)
        pos, k = pos[keep], k[keep]
        minor = pos[k % 5 != 0] if step >= MIN_PX_PER_MM_FOR_MINOR else pos[:0]
        for lines, rgb in ((minor, MINOR_RGB), (pos[k % 5 == 0], MAJOR_RGB)):
            if axis == 1:
                img[:, lines] = rgb
            else:
                img[lines, :] = rgb
    return img


@lru_cache(maxsize=8)
def _font(px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's bundled font at ``px`` pixels (memoised: loading costs ~1 ms)."""
    try:
        return ImageFont.load_default(size=px)
    except (TypeError, OSError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _polyline(x: np.ndarray, y: np.ndarray, max_per_px: int = 2) -> list[tuple[float, float]]:
    """Points of a trace; where samples are denser than ``max_per_px`` per pixel column,
    each column is reduced to its min and max (in the column's direction of travel), which
    keeps narrow spikes such as QRS complexes at full height."""
    span = max(1.0, float(x[-1] - x[0]))
    if x.size <= max_per_px * span:
        return list(zip(x.tolist(), y.tolist()))
    starts = np.concatenate(([0], np.flatnonzero(np.diff(np.floor(x - x[0]))) + 1))
    ends = np.concatenate((starts[1:], [y.size])) - 1
    lo, hi = np.minimum.reduceat(y, starts), np.maximum.reduceat(y, starts)
    rising = y[ends] >= y[starts]
    pts = np.empty((2 * starts.size, 2))
    pts[0::2, 0], pts[1::2, 0] = x[starts], x[ends]
    pts[0::2, 1] = np.where(rising, lo, hi)
    pts[1::2, 1] = np.where(rising, hi, lo)
    return list(map(tuple, pts.tolist()))


def render_12lead(signal: np.ndarray, fs: float, size: int | tuple[int, int] = 512,
                  labels: bool = True) -> np.ndarray:
    """Render a 12-lead ECG on ECG paper.

    Args:
        signal: ``(12, T)`` ECG in mV, lead order :data:`ecglm.data.records.LEADS`; the first
            10 s are drawn (shorter records leave the rest of the paper blank).
        fs: sampling rate in Hz.
        size: output ``(H, W)`` in pixels, or one int for a square image (default 512).
        labels: print lead names above each trace.

    Returns:
        ``(H, W, 3)`` uint8 RGB image.

    Raises:
        SignalError: wrong shape, non-finite values, bad ``fs`` or ``size``.
    """
    x, rate = check_signal(signal, fs)
    lay = layout_12lead(size)
    n_show = min(x.shape[1], int(round(STRIP_SECONDS * rate)))
    x = x[:, :n_show]
    x = x - np.median(x, axis=1, keepdims=True)
    img = Image.fromarray(_grid(lay))
    draw = ImageDraw.Draw(img)
    width = max(1, int(round(0.25 * lay.px_per_mm)))
    t = np.arange(n_show) / rate
    xpix = np.asarray(lay.x_of(t))
    col_len = int(round(STRIP_SECONDS / 4 * rate))
    font = _font(max(8, int(round(3.5 * lay.px_per_mm))))
    for row, names in enumerate(GRID_LAYOUT):
        for col, name in enumerate(names):
            s0, s1 = col * col_len, min(n_show, (col + 1) * col_len)
            if s1 - s0 >= 2:
                y = np.asarray(lay.y_of(row, x[LEADS.index(name), s0:s1]))
                draw.line(_polyline(xpix[s0:s1], y), fill=TRACE_RGB, width=width)
            _label(draw, lay, row, col, name, font, labels)
    if n_show >= 2:
        y = np.asarray(lay.y_of(3, x[LEADS.index(RHYTHM_LEAD)]))
        draw.line(_polyline(xpix, y), fill=TRACE_RGB, width=width)
    _label(draw, lay, 3, 0, RHYTHM_LEAD, font, labels)
    return np.asarray(img)


def _label(draw: ImageDraw.ImageDraw, lay: Layout, row: int, col: int, name: str,
           font: ImageFont.ImageFont | ImageFont.FreeTypeFont, labels: bool) -> None:
    """Lead name above the trace start and a short separator tick between columns."""
    x = lay.x0 + col * lay.col_width
    yc = lay.row_centres[row]
    if col > 0:
        tick = 2.5 * lay.px_per_mm
        draw.line([(x, yc - tick), (x, yc + tick)], fill=TRACE_RGB, width=1)
    if labels:
        draw.text((x + 1.0 * lay.px_per_mm, yc - 9.0 * lay.px_per_mm), name, fill=LABEL_RGB,
                  font=font)


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write an ``(H, W, 3)`` uint8 image as PNG; returns the path."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise SignalError("image", f"expected (H, W, 3) uint8, got {arr.shape} {arr.dtype}")
    out = Path(path)
    Image.fromarray(arr).save(out, format="PNG")
    return out
