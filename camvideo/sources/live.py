"""Live sources: cameras, network streams, and video files played in real time.

Every source yields :class:`~camvideo.video.Frame` objects whose ``captured`` is the
``time.monotonic()`` at which the frame was grabbed (camera, stream) or became due
(paced file), so the app can measure capture-to-display latency; ``time`` is seconds
since the source started (it keeps growing across reconnects and loops, so smoothing
and recordings see one clock) and ``pts`` counts that time in :data:`LIVE_TIME_BASE`.

* :class:`CameraSource`: a webcam by index or device path, through OpenCV's
  ``VideoCapture`` (buffer size 1) or PyAV's v4l2 / avfoundation / dshow input.
* :class:`StreamSource`: rtsp://, http(s)://, udp://, tcp:// ... through PyAV, probing
  briefly and decoding with low delay.
  (These two are in :mod:`camvideo.sources.devices`.)
* :class:`PacedFileSource`: a video file at its own frame rate, optionally looped.

A camera or stream that stops delivering is reported in :attr:`LiveSource.status`
and reopened until it comes back (or ``reconnect_timeout`` passes, then
:class:`~camvideo.errors.SourceLost`). Pause, single steps and replays go through a
:class:`~camvideo.pipeline.Gate`; :meth:`LiveSource.close` works from any thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from fractions import Fraction
from os import PathLike
from pathlib import Path

import numpy as np

from ..errors import InputError, SourceLost
from ..pipeline import Gate
from ..types import Frame, VideoInfo
from .file import FileSource

__all__ = [
    "LIVE_TIME_BASE", "STREAM_SCHEMES", "DeviceLost", "LiveSource", "RawFrame", "ReconnectingSource",
    "PacedFileSource",
]  # fmt: skip

log = logging.getLogger(__name__)

#: Unit of live frames' ``pts`` (the MPEG clock: exact for 24, 25, 30, 50, 60 fps).
LIVE_TIME_BASE = Fraction(1, 90000)
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "rtp", "srt")

#: (RGB image, captured, extra): one read from a device.
RawFrame = tuple[np.ndarray, float, dict]


class DeviceLost(Exception):
    """The open device or stream stopped delivering (the reason is the message)."""


class LiveSource:
    """Base of the live sources: the gate (pause/step/replay), frame numbering, closing.

    Subclasses implement :meth:`_produce`, yielding ``(image, captured, time, extra)``.
    ``holds_when_paused``: a file waits while paused; a camera or stream keeps reading
    and drops what it reads (counted in :attr:`frames_paused`), so that on resume the
    next frame is a fresh one, not one from the device's buffer.
    """

    kind = "live"
    holds_when_paused = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.gate = Gate()
        self.status = "starting"
        self.reconnects = 0
        self.frames_paused = 0
        self.info: VideoInfo
        self._index = 0
        self._last: Frame | None = None

    # -- for subclasses -------------------------------------------------------------------
    def _produce(self) -> Iterator[tuple[np.ndarray, float, float, dict]]:
        raise NotImplementedError

    def _release(self) -> None:
        """Free the device (called once by :meth:`close`)."""

    # -- control (any thread) ---------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self.gate.closed

    @property
    def paused(self) -> bool:
        return self.gate.paused

    def pause(self) -> None:
        self.gate.pause()

    def resume(self) -> None:
        self.gate.resume()

    def step(self) -> None:
        """While paused: let the next frame through."""
        self.gate.step()

    def replay(self) -> None:
        """Send the last frame again (marked ``extra["replay"]``), to redraw it while paused."""
        self.gate.replay()

    def close(self) -> None:
        """Stop iterating and release the device. Idempotent, safe from any thread."""
        if not self.gate.closed:
            self.gate.close()
            self._release()

    def __enter__(self) -> LiveSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- iteration ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Frame]:
        for image, captured, seconds, extra in self._produce():
            verdict = self.gate.admit(block=self.holds_when_paused)
            while verdict == Gate.REPLAY:
                if self._last is not None:
                    last = self._last
                    yield Frame(
                        last.index, last.image, last.pts, last.time, time.monotonic(), {**last.extra, "replay": True}
                    )
                verdict = self.gate.admit(block=self.holds_when_paused)
            if verdict == Gate.CLOSED:
                return
            if verdict == Gate.DROP:
                self.frames_paused += 1
                continue
            if self.holds_when_paused:
                captured = max(captured, time.monotonic())  # it may have waited at the gate
            if self.gate.paused:
                extra["step"] = True  # a single step: explained on its own, not in the background
            frame = Frame(self._index, image, round(seconds / LIVE_TIME_BASE), seconds, captured, extra)
            self._index += 1
            self._last = frame
            yield frame

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class ReconnectingSource(LiveSource):
    """A device that may disappear: read until it fails, report it, reopen with backoff."""

    def __init__(self, name: str, reconnect_timeout: float | None) -> None:
        super().__init__(name)
        self.reconnect_timeout = reconnect_timeout

    def _read(self) -> Iterator[RawFrame]:
        """Frames from the open device; raises :class:`DeviceLost` (or returns) when it stops."""
        raise NotImplementedError

    def _reopen(self) -> None:
        """Open the device again; raises InputError while it is not back."""
        raise NotImplementedError

    def _produce(self) -> Iterator[tuple[np.ndarray, float, float, dict]]:
        start: float | None = None
        while True:
            try:
                for image, captured, extra in self._read():
                    start = captured if start is None else start
                    self.status = "live"
                    yield image, captured, captured - start, extra
                reason = "it stopped sending frames"
            except DeviceLost as err:
                reason = str(err)
            if self.closed:
                return
            self._reconnect(reason)

    def _reconnect(self, reason: str) -> None:
        self.status = f"{self.name} lost ({reason}); reconnecting"
        log.warning("%s lost (%s); trying to reconnect", self.name, reason)
        began, attempt, delay = time.monotonic(), 0, 0.25
        while True:
            if not self.gate.sleep(delay):
                return
            attempt += 1
            try:
                self._reopen()
            except InputError as err:
                waited = time.monotonic() - began
                self.status = f"{self.name} lost; reconnecting (attempt {attempt}, {waited:.0f} s)"
                if self.reconnect_timeout is not None and waited >= self.reconnect_timeout:
                    raise SourceLost(f"{self.name} lost ({reason}) and not back after {waited:.0f} s: {err}") from None
                delay = min(2.0, delay * 2)
                continue
            self.reconnects += 1
            self.status = "live"
            log.warning("%s is back after %.1f s", self.name, time.monotonic() - began)
            return


# -- files in real time -------------------------------------------------------------------------


class PacedFileSource(LiveSource):
    """A video file delivered at its own frame rate (``speed`` times it), optionally looped.

    Frames are released when their timestamp is due on the wall clock; ``captured`` is
    that moment. When decoding falls behind, the clock slips rather than frames being
    skipped (a player that cannot keep up plays slower). Time keeps growing across
    loops; ``extra["source_time"]`` is the position in the file (the recorder's audio
    follows it). Pausing holds the file where it is.
    """

    kind = "file"
    holds_when_paused = True

    def __init__(self, path: str | PathLike, *, loop: bool = True, speed: float = 1.0) -> None:
        if not speed > 0:
            raise InputError(f"playback speed must be above 0, not {speed}")
        self.path = Path(path)
        super().__init__(self.path.name)
        self.loop = loop
        self.speed = speed
        self.loops = 0
        self.base: float | None = None  # file time of the first frame (time 0 of the live clock)
        #: seconds of live time one pass of the file takes (known once it has been played
        #: through; until then, an estimate from the container)
        self.period: float | None = None
        self._file = FileSource(self.path)
        src = self._file.info
        self.info = VideoInfo(width=src.width, height=src.height, fps=src.fps, time_base=LIVE_TIME_BASE,
                              frame_count=None if loop else src.frame_count, duration=None if loop else src.duration,
                              rotation=src.rotation, has_audio=src.has_audio, codec=src.codec, name=src.name)  # fmt: skip
        self.status = "playing"

    @property
    def file_info(self) -> VideoInfo:
        """The file's own :class:`VideoInfo` (its time base, frame count, duration)."""
        return self._file.info

    def _produce(self) -> Iterator[tuple[np.ndarray, float, float, dict]]:
        interval = 1.0 / self.info.fps
        start = time.monotonic()
        offset = 0.0  # seconds of video before this pass (loops)
        while True:
            position = 0.0
            for frame in self._file:
                base = self.base = frame.time if self.base is None else self.base
                position = frame.time - base
                seconds = offset + position
                due = start + seconds / self.speed + self.gate.paused_total()
                late = time.monotonic() - due
                if late > 2 * interval:
                    start += late  # fell behind (slow decode): slip the clock, keep every frame
                elif not self.gate.sleep(-late):
                    return
                extra = {"source_time": frame.time, "loop": self.loops}
                yield frame.image, time.monotonic(), seconds, extra
            if not self.loop or self.closed or self.base is None:
                self.status = "ended"
                return
            self.period = self.period or position + interval
            offset += self.period
            self.loops += 1

    def _release(self) -> None:
        self._file.close()
