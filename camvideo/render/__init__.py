"""From raw maps to the finished frame: smoothing, overlay, box, label, device transfers.

:class:`Renderer` upsamples, normalises, colours and blends on the maps' device and
draws the CAM box and the label; :class:`TemporalSmoother` steadies maps and classes
over time; :class:`FrameUploader` / :class:`FrameDownloader` move uint8 frames between
the host and the device with pinned buffers.
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
from .transfer import FrameDownloader, FrameUploader

__all__ = [
    "COLORMAPS", "FrameDownloader", "FrameUploader", "Rendered", "Renderer", "TemporalSmoother", "cam_box",
    "cam_box_reduced", "colormap_lut", "draw_box", "draw_label", "largest_component_box", "normalize_maps",
]  # fmt: skip
