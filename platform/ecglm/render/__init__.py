"""Paper-style 12-lead ECG images (3x4 panel + lead II rhythm strip) for image encoders."""

from ecglm.render.image import (
    GRID_LAYOUT,
    RHYTHM_LEAD,
    Layout,
    layout_12lead,
    render_12lead,
    save_png,
)

__all__ = ["GRID_LAYOUT", "RHYTHM_LEAD", "Layout", "layout_12lead", "render_12lead", "save_png"]
