"""``serve browser``: the viewer's own camera, its frames uploaded over the page's socket."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import cv2
import numpy as np

from ..sources import LIVE_TIME_BASE, LiveSource
from ..types import VideoInfo

__all__ = ["BrowserSource"]


class BrowserSource(LiveSource):
    """A live source fed by :meth:`push` (the server's upload handler): it yields the newest
    pushed frame, the ones pushed while the session was busy are dropped (latest wins, as a
    camera's buffer of one), and it ends when closed.

    ``info`` is a guess until the first frame arrives (the browser picks the camera's size);
    later frames of another size (a camera changing resolution, or another viewer's camera)
    are resized to the first frame's size (stretched, not letterboxed), so a recording,
    which takes the first frame's size, never fails mid-way.
    """

    kind = "camera"
    holds_when_paused = False

    def __init__(self, fps: float = 30.0) -> None:
        super().__init__("browser camera")
        self.info = VideoInfo(width=640, height=480, fps=float(fps), time_base=LIVE_TIME_BASE,
                              frame_count=None, duration=None, name="browser camera")  # fmt: skip
        self.status = "waiting for the browser's camera"
        self.pushed = 0
        self.dropped = 0  # pushed but never read: a newer one came first
        self._cond = threading.Condition()
        self._newest: tuple[np.ndarray, float, dict] | None = None
        self.size: tuple[int, int] | None = None  # (width, height) of the first frame: all frames get it

    def push(self, image: np.ndarray, stamp: float = 0.0) -> None:
        """A decoded RGB frame from the browser; ``stamp`` is the client's own time for it."""
        height, width = image.shape[:2]
        if self.size is None:
            self.size = (width, height)
        elif self.size != (width, height):
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        with self._cond:
            if self._newest is not None:
                self.dropped += 1
            self._newest = (image, time.monotonic(), {"client_stamp": stamp})
            self.pushed += 1
            self._cond.notify_all()

    def _produce(self) -> Iterator[tuple[np.ndarray, float, float, dict]]:
        start: float | None = None
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._newest is not None or self.closed, 0.25)
                if self.closed:
                    return
                newest, self._newest = self._newest, None
            if newest is None:
                continue
            image, captured, extra = newest
            if start is None:
                start = captured
                height, width = image.shape[:2]
                self.info = VideoInfo(width=width, height=height, fps=self.info.fps, time_base=LIVE_TIME_BASE,
                                      frame_count=None, duration=None, name=self.name)  # fmt: skip
            self.status = "live"
            yield image, captured, captured - start, extra

    def _release(self) -> None:
        with self._cond:
            self._cond.notify_all()
