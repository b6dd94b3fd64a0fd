"""Small value types shared by every stage: what a video is and what a frame carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np


@dataclass(frozen=True)
class VideoInfo:
    """What a source knows about its video before the first frame.

    ``width``/``height`` are those of the frames the source yields (after rotation
    metadata has been applied, so they are upright). ``time_base`` is the unit of
    :attr:`Frame.pts`; ``fps`` is the average rate (variable-rate videos keep their
    own timestamps, this is only a hint for the encoder and progress bar).
    """

    width: int
    height: int
    fps: float
    time_base: Fraction
    frame_count: int | None = None  # None when the container does not say (streams, some files)
    duration: float | None = None  # seconds
    rotation: int = 0  # degrees the source frames were rotated by to make them upright
    has_audio: bool = False
    codec: str = ""
    name: str = ""  # file name or source description, for messages and progress bars


@dataclass
class Frame:
    """One decoded frame on its way through the pipeline.

    ``image`` is upright uint8 RGB (H, W, 3). ``pts`` is in the source's ``time_base``
    (None when the source has no timestamps); ``time`` is the presentation time in
    seconds; ``captured`` is ``time.monotonic()`` when the frame was decoded or grabbed,
    for capture-to-display latency.
    """

    index: int
    image: np.ndarray
    pts: int | None
    time: float
    captured: float = 0.0
    extra: dict = field(default_factory=dict)
