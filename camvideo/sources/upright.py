"""Decoded frames as a player shows them: turned upright, in the right colours.

FFmpeg hands frames over as stored: a phone video filmed upright is stored sideways
with a display matrix saying how to turn it, and YUV frames need the matrix they were
encoded with (often untagged) to become the right RGB. These helpers read both from a
PyAV frame, the way the ``ffmpeg`` CLI and common players do.
"""

from __future__ import annotations

import logging
import struct

import av
import numpy as np
from av.video.reformatter import Colorspace

__all__ = ["Orientation", "UPRIGHT", "orientation", "yuv_matrix", "turn_upright"]

log = logging.getLogger(__name__)

# Orientation step = (quarter turns counter-clockwise for np.rot90, flip rows, flip columns).
Orientation = tuple[int, bool, bool]
UPRIGHT: Orientation = (0, False, False)


def orientation(frame: av.VideoFrame) -> tuple[Orientation, int]:
    """How to turn ``frame`` upright, and the clockwise turn that involves, in degrees.

    Reads the frame's display matrix (the MP4/MOV ``tkhd`` matrix or the old ``rotate``
    tag, which FFmpeg turns into the same side data) and maps it exactly the way the
    ``ffmpeg`` CLI's autorotate does (fftools ``get_rotation`` + transpose/hflip/vflip),
    so the picture comes out as a player shows it, mirrored matrices included.
    ``frame.rotation`` alone is not enough: a pure mirror reads as -180 degrees.
    Angles that are not a multiple of 90 degrees are left alone (logged).
    """
    matrix = None
    for side in frame.side_data:
        if "DISPLAYMATRIX" in str(side.type):
            raw = bytes(side)
            if len(raw) >= 36:
                matrix = struct.unpack("<9i", raw[:36])
            break
    if matrix is None:
        return UPRIGHT, 0
    a, b, c, d = (v / 65536.0 for v in (matrix[0], matrix[1], matrix[3], matrix[4]))
    scale_x, scale_y = np.hypot(a, c), np.hypot(b, d)
    if scale_x == 0 or scale_y == 0:
        return UPRIGHT, 0
    # av_display_rotation_get() is counter-clockwise; ffmpeg negates it to get the
    # clockwise angle it has to apply, normalised to [0, 360).
    theta = -round(-np.degrees(np.arctan2(b / scale_y, a / scale_x)))
    theta -= 360 * np.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        # transpose=cclock_flip (a plain transpose) or transpose=clock
        steps: Orientation = (1, True, False) if c > 0 else (-1, False, False)
    elif abs(theta - 180) < 1:
        steps = (0, d < 0, a < 0)  # vflip and/or hflip
    elif abs(theta - 270) < 1:
        # transpose=clock_flip or transpose=cclock
        steps = (-1, True, False) if c < 0 else (1, False, False)
    elif abs(theta) < 1:
        steps = (0, d < 0, False)
    else:
        log.warning("display rotation of %.0f degrees is not a multiple of 90; frames left as stored", theta)
        return UPRIGHT, 0
    # Report the turn only (a pure mirror is rotation 0; both flips are 180 degrees).
    turns, flip_rows, flip_cols = steps
    clockwise = (-90 * turns) % 360
    if flip_rows and flip_cols:
        clockwise = (clockwise + 180) % 360
    return steps, clockwise


# AVColorSpace (what the frame is tagged with) -> swscale's matrix.
_MATRICES = {1: Colorspace.ITU709, 4: Colorspace.FCC, 5: Colorspace.ITU601, 6: Colorspace.ITU601,
             7: Colorspace.SMPTE240M, 9: Colorspace.BT2020, 10: Colorspace.BT2020}  # fmt: skip


def yuv_matrix(frame: av.VideoFrame) -> Colorspace:
    """The YUV->RGB matrix for ``frame``: its tag, else what players assume.

    Untagged video is BT.709 when it is HD and BT.601 otherwise (the rule mpv and
    browsers use), so colours match what the user sees in a player.
    """
    tagged = _MATRICES.get(int(frame.colorspace))
    if tagged is not None:
        return tagged
    return Colorspace.ITU709 if frame.width >= 1280 or frame.height > 576 else Colorspace.ITU601


def turn_upright(image: np.ndarray, steps: Orientation) -> np.ndarray:
    """Turn ``image`` upright; returns a C-contiguous array (consumers hand it to torch/cv2)."""
    turns, flip_rows, flip_cols = steps
    if turns:
        image = np.rot90(image, turns)
    if flip_rows:
        image = image[::-1]
    if flip_cols:
        image = image[:, ::-1]
    return np.ascontiguousarray(image)
