"""The session's display slot, JPEG-encoded once per frame for every viewer.

One thread takes each frame the live session publishes (its display slot holds one:
the newest), encodes it with libjpeg-turbo through OpenCV and keeps it as
:attr:`FrameHub.latest`; viewers on the event loop wait for a frame newer than the one
they have. Nobody queues: a viewer that was busy gets the newest frame, and the ones in
between are never sent to it.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np

from ..jobs import LiveSession
from ..types import FrameResult

__all__ = ["EncodedFrame", "FrameHub", "encode_jpeg"]


def encode_jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    """RGB uint8 → JPEG bytes (OpenCV's libjpeg-turbo)."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


@dataclass(frozen=True)
class EncodedFrame:
    seq: int
    jpeg: bytes
    captured_ms: float  # the source's capture time, ms since the epoch
    stamp: float  # the client's stamp of an uploaded frame (serve browser), else 0
    width: int
    height: int


class FrameHub:
    """Encode the session's displayed frames for the viewers (see the module's docstring)."""

    def __init__(self, session: LiveSession, quality: int = 80) -> None:
        self.session = session
        self.quality = quality
        self.latest: EncodedFrame | None = None
        self.last_result: FrameResult | None = None
        self.encoded = 0
        self.encode_seconds = 0.0
        self.closed = False
        self._epoch = time.time() - time.monotonic()  # monotonic capture times → the epoch
        self._shown: collections.deque[float] = collections.deque(maxlen=120)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._new: asyncio.Event | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="camvideo-serve-encode", daemon=True)

    def start(self, loop: asyncio.AbstractEventLoop) -> FrameHub:
        self._loop, self._new = loop, asyncio.Event()
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self.closed = True
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._ring)
            except RuntimeError:  # the loop has stopped
                pass

    def fps(self) -> float:
        """Frames encoded per second over the last couple of seconds."""
        now = time.monotonic()
        recent = [t for t in self._shown if t > now - 2.0]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(1e-6, recent[-1] - recent[0])

    async def wait_after(self, seq: int) -> EncodedFrame | None:
        """The newest frame once it is newer than ``seq``; None when the hub has closed."""
        assert self._new is not None
        while not self.closed:
            latest = self.latest
            if latest is not None and latest.seq > seq:
                return latest
            await self._new.wait()
        return None

    def _ring(self) -> None:  # on the event loop
        assert self._new is not None
        self._new.set()
        self._new = asyncio.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            result = self.session.display.get(0.1)
            if result is None:
                continue
            start = time.perf_counter()
            jpeg = encode_jpeg(result.image, self.quality)
            self.encode_seconds += time.perf_counter() - start
            frame = result.frame
            height, width = result.image.shape[:2]
            self.last_result = result
            self.latest = EncodedFrame(self.encoded + 1, jpeg, 1000 * (frame.captured + self._epoch),
                                       float(frame.extra.get("client_stamp", 0.0)), width, height)  # fmt: skip
            self.encoded += 1
            self._shown.append(time.monotonic())
            loop = self._loop
            if loop is not None:
                try:
                    loop.call_soon_threadsafe(self._ring)
                except RuntimeError:  # the loop has closed (shutting down)
                    return
