"""Recording a live session: the displayed overlay to an MP4, with the source's audio.

:class:`LiveRecorder` is a writer like the others (open, write, close, abort): video goes
through :class:`~camvideo.sinks.Mp4Sink`, the encoder ``annotate`` uses, timed by the
frames' live clock from the first recorded frame, so the file plays at the pace it was
captured. The audio comes from the ``audio`` argument, called with the first recorded
frame: a live source's feed (:func:`camvideo.sources.recording_audio`), retimed onto
the same clock. The recorder has no thread of its own; the live session feeds it from
a drop-when-full worker so that a slow encoder never stalls the display.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Protocol

from ..errors import OutputError
from ..types import Frame, FrameResult, VideoInfo
from .audio import AudioFeed
from .base import Writer, check_output_folder
from .mp4 import Mp4Sink

__all__ = ["LiveRecorder", "RecordingAudio", "check_recording_path"]

log = logging.getLogger(__name__)

#: Unit of a recording's pts (the MPEG clock: exact for 24, 25, 30, 50, 60 fps).
RECORDING_TIME_BASE = Fraction(1, 90000)


class RecordingAudio(AudioFeed, Protocol):
    """An audio feed on the recording's clock that can be told where the recording ends."""

    def end_at(self, seconds: float) -> None: ...


def check_recording_path(path: Path) -> Path:
    """Refuse what cannot become a recording: not .mp4, existing, folder missing."""
    if path.suffix.lower() != ".mp4":
        raise OutputError(f"{path}: recordings are MP4 files; give a name ending in .mp4")
    if path.exists():
        raise OutputError(f"{path}: already exists; choose another name")
    check_output_folder(path)
    return path


class LiveRecorder(Writer):
    """Record :class:`FrameResult` images to ``path``, timed by their live clock.

    ``fps`` is the source's rate (an encoder hint); ``audio(first_frame)`` returns the
    audio feed for a recording starting at that frame, or None.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        *,
        audio: Callable[[Frame], RecordingAudio | None] | None = None,
        crf: int = 23,
        preset: str = "veryfast",
    ) -> None:
        super().__init__(check_recording_path(Path(path)))
        self.fps = fps or 30.0
        self._audio = audio
        self._crf, self._preset = crf, preset
        self._sink: Mp4Sink | None = None
        self._feed: RecordingAudio | None = None
        self._t0 = 0.0
        self._last = 0.0  # recording seconds of the last frame written
        self.open()

    @property
    def frames(self) -> int:
        return self.frames_written

    def _open(self) -> None:
        """Nothing to create yet: the MP4's size is the first frame's."""

    def _write(self, result: FrameResult) -> None:
        frame = result.frame
        if self._sink is None:
            self._t0 = frame.time
            height, width = result.image.shape[:2]
            info = VideoInfo(width=width, height=height, fps=self.fps, time_base=RECORDING_TIME_BASE,
                             name=self.path.name)  # fmt: skip
            self._feed = self._audio(frame) if self._audio is not None else None
            try:
                self._sink = Mp4Sink(self.path, info, audio=self._feed, crf=self._crf, preset=self._preset)
            except BaseException:
                if self._feed is not None:
                    self._feed.close()
                raise
        seconds = frame.time - self._t0
        self._sink.encode(result.image, round(seconds / RECORDING_TIME_BASE), seconds)
        self._last = seconds

    def _finish(self) -> Path:
        """Finish the MP4 and return its path.

        Raises:
            OutputError: nothing was recorded, or the file could not be written.
        """
        if self._sink is None:
            raise OutputError(f"{self.path}: no frame was recorded, so no video was made")
        if self._feed is not None:
            # The audio ends with the last frame's duration: close() copies up to there.
            self._feed.end_at(self._last + 1.0 / self.fps)
        return self._sink.close()

    def _discard(self) -> None:
        if self._sink is not None:
            self._sink.abort()
        elif self._feed is not None:
            self._feed.close()
