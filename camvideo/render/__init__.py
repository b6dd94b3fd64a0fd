"""From raw maps to the finished frame: smoothing, overlay, box, label, device transfers.

:class:`Renderer` upsamples, normalises, colours and blends on the maps' device and
draws the CAM box and the label; :class:`TemporalSmoother` steadies maps and classes
over time; :class:`FrameDownloader` moves the finished uint8 frames back to the host with
a pinned buffer (the upload, for the model, is :class:`camvideo.engine.FrameUploader`).
"""

from .overlay import (
    COLORMAPS,
    Rendered,
    Renderer,
    cam_box,
    cam_box_reduced,
    colormap_lut,
    draw_box,
    draw_label,
    largest_component_box,
    normalize_maps,
)  # fmt: skip
from .smoothing import TemporalSmoother
from .transfer import FrameDownloader

__all__ = [
    "COLORMAPS", "FrameDownloader", "Rendered", "Renderer", "TemporalSmoother", "cam_box",
    "cam_box_reduced", "colormap_lut", "draw_box", "draw_label", "largest_component_box", "normalize_maps",
]  # fmt: skip
