"""Small value types shared by every stage: what a video is, what a frame carries, what
the stage made of it.

This module imports numpy only (no torch, no engine), so sources, sinks and writers can
use these types without loading the model code.
"""

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


Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels, x1/y1 exclusive


@dataclass
class FrameResult:
    """One annotated frame and what the model said about it."""

    frame: Frame  # the source frame (its image is the original)
    image: np.ndarray  # annotated uint8 RGB
    classes: list[int]  # the class(es) the map is for: one, or k for top-k targets
    scores: list[float]  # their softmax probabilities
    box: Box | None
    top5: list[tuple[int, float]]
    raw_map: np.ndarray | None = None  # (T, h', w') float32 raw maps, when kept
    extra: dict = field(default_factory=dict)
    #: classes[0] is the smoother's choice (its hysteresis can hold a class that is no longer
    #: the model's top-1, which is top5[0]); False: the model's own classes for the target.
    smoothed: bool = False

    @property
    def class_index(self) -> int:
        return self.classes[0]

    @property
    def score(self) -> float:
        return self.scores[0]
