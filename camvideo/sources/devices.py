"""Live device sources: cameras (OpenCV or PyAV) and network streams (PyAV).

Both build on :class:`~camvideo.sources.live.ReconnectingSource`: a device that stops delivering is
reported in ``status`` and reopened until it is back. Import them from
:mod:`camvideo.sources.opening` (``open_live_source`` picks the right one from a SOURCE argument).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from ..errors import InputError
from ..types import VideoInfo
from .live import LIVE_TIME_BASE, DeviceLost, RawFrame, ReconnectingSource

__all__ = ["CameraInfo", "list_cameras", "CameraSource", "StreamSource"]

log = logging.getLogger(__name__)


# -- cameras ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraInfo:
    spec: str  # what open_live_source() takes: "0", "/dev/video2", ...
    name: str  # for menus


def list_cameras() -> list[CameraInfo]:
    """The cameras this machine has, without opening them where the OS can say.

    On Linux: every V4L2 capture node that is a device's first (``index`` 0; webcams
    also expose metadata nodes), named from sysfs. Elsewhere: indices 0 and 1 (the OS
    gives no cheap list; opening tells).
    """
    if not sys.platform.startswith("linux"):
        return [CameraInfo(str(i), f"Camera {i}") for i in range(2)]
    found = []
    for node in sorted(Path("/sys/class/video4linux").glob("video*"), key=lambda p: int(p.name[5:] or 0)):
        try:
            if (node / "index").read_text().strip() not in ("", "0"):
                continue
            name = (node / "name").read_text().strip()
        except OSError:
            name = node.name
        number = node.name[5:]
        if number.isdigit() and Path(f"/dev/video{number}").exists():
            found.append(CameraInfo(number, f"{name} (/dev/video{number})"))
    return found


class CameraSource(ReconnectingSource):
    """A webcam by index (``0``) or device path (``/dev/video0``).

    ``backend="opencv"``: ``cv2.VideoCapture`` with a one-frame buffer (V4L2 on Linux).
    ``backend="av"``: PyAV's ``v4l2`` (Linux), ``avfoundation`` (macOS) or ``dshow``
    (Windows, device by name) input. ``width``/``height``/``fps`` are requests the
    camera may round. The constructor opens the camera and reads one frame, so a
    missing or busy camera fails at once with "camera N not found or busy".
    """

    kind = "camera"

    def __init__(
        self,
        device: int | str,
        *,
        backend: str = "opencv",
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        reconnect_timeout: float | None = None,
    ) -> None:
        if backend not in ("opencv", "av"):
            raise InputError(f"camera backend must be opencv or av, not {backend!r}")
        self.device = int(device) if str(device).isdigit() else str(device)
        super().__init__(f"camera {self.device}", reconnect_timeout)
        self.backend = backend
        self._request = (width, height, fps)
        self._lock = threading.Lock()  # held around each read, so close() never frees a device mid-read
        self._capture: object | None = None  # cv2.VideoCapture or av InputContainer
        self._av_frames: Iterator | None = None
        self._pending: np.ndarray | None = None  # the first frame, read by the constructor
        self._reopen()
        assert self._pending is not None
        height_px, width_px = self._pending.shape[:2]
        self.info = VideoInfo(width=width_px, height=height_px, fps=self._fps, time_base=LIVE_TIME_BASE,
                              codec=backend, name=self.name)  # fmt: skip

    def _reopen(self) -> None:
        with self._lock:
            self._close_device()
            if self.closed:
                return
            opener = self._open_opencv if self.backend == "opencv" else self._open_av
            image = opener()
            if image is None:
                self._close_device()
                raise InputError(f"{self.name} not found or busy (is another program using it?)")
            self._pending = image

    def _open_opencv(self) -> np.ndarray | None:
        import cv2

        try:  # errors only: probing a missing camera prints pages of warnings
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        except AttributeError:
            pass
        api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        capture = cv2.VideoCapture(self.device, api)
        self._capture = capture
        if not capture.isOpened():
            return None
        # One buffered frame: what we read is the newest the camera has, not a second old.
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        width, height, fps = self._request
        if width and height:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            capture.set(cv2.CAP_PROP_FPS, fps)
        rate = capture.get(cv2.CAP_PROP_FPS)
        self._fps = float(rate) if rate and 0 < rate < 1000 else 30.0
        ok, bgr = capture.read()
        if not ok or bgr is None:
            return None
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def _open_av(self) -> np.ndarray | None:
        if sys.platform.startswith("linux"):
            fmt, url = "v4l2", self.device if isinstance(self.device, str) else f"/dev/video{self.device}"
        elif sys.platform == "darwin":
            fmt, url = "avfoundation", str(self.device)
        else:
            fmt, url = "dshow", str(self.device) if str(self.device).startswith("video=") else f"video={self.device}"
        width, height, fps = self._request
        options = {}
        if width and height:
            options["video_size"] = f"{width}x{height}"
        if fps:
            options["framerate"] = f"{fps:g}"
        try:
            container = av.open(url, format=fmt, options=options, timeout=(5.0, 2.0))
        except (av.FFmpegError, OSError):
            return None
        self._capture = container
        if not container.streams.video:
            return None
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "SLICE"  # frame threads would delay every frame
        rate = stream.average_rate or stream.guessed_rate
        self._fps = float(rate) if rate else 30.0
        self._av_frames = container.decode(stream)
        try:
            return next(self._av_frames).to_ndarray(format="rgb24")
        except (StopIteration, av.FFmpegError, OSError):
            return None

    def _read(self) -> Iterator[RawFrame]:
        while not self.closed:
            with self._lock:
                if self._pending is not None:
                    image, self._pending = self._pending, None
                elif self._capture is None:
                    raise DeviceLost("closed")
                elif self.backend == "opencv":
                    ok, bgr = self._capture.read()  # type: ignore[attr-defined]
                    if not ok or bgr is None:
                        raise DeviceLost("no frame from the camera")
                    import cv2

                    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                else:
                    try:
                        image = next(self._av_frames).to_ndarray(format="rgb24")  # type: ignore[arg-type]
                    except StopIteration:
                        raise DeviceLost("the camera stopped") from None
                    except (av.FFmpegError, OSError) as err:
                        raise DeviceLost(" ".join(str(err).split())) from None
            yield image, time.monotonic(), {}

    def _close_device(self) -> None:
        capture, self._capture, self._av_frames = self._capture, None, None
        if capture is None:
            return
        try:
            capture.release() if self.backend == "opencv" else capture.close()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - releasing a vanished device may fail; it is gone either way
            pass

    def _release(self) -> None:
        # A read lasts at most a frame interval; if the device hangs, the reading thread
        # releases it itself when the read returns (it checks `closed` first).
        if self._lock.acquire(timeout=1.0):
            try:
                self._close_device()
            finally:
                self._lock.release()


# -- network streams ------------------------------------------------------------------------------


def _stream_options(url: str) -> dict[str, str]:
    """FFmpeg input options for low latency: a short probe, low-delay decoding.

    Not ``fflags=nobuffer``: it throws away the packets read while probing, and with them
    the first keyframe, so a stream with long GOPs would show nothing for seconds. The
    probed packets are read first and at once, and the latest-frame policy drops them.
    """
    options = {"flags": "low_delay", "probesize": "1000000", "analyzeduration": "1000000"}
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("rtsp", "rtsps"):
        options["rtsp_transport"] = "tcp"  # no smeared frames from lost UDP packets
    elif scheme == "udp":
        # A big socket FIFO, and a full one drops packets instead of killing the input.
        options.update({"fifo_size": "1000000", "overrun_nonfatal": "1", "buffer_size": "4194304"})
    return options


class StreamSource(ReconnectingSource):
    """A network stream (rtsp, http(s), udp, tcp, ...) decoded with PyAV.

    The constructor connects and decodes the first frame (within ``open_timeout``
    seconds), so an unreachable URL fails at once. A read that waits longer than
    ``read_timeout`` seconds for data counts as a lost stream (reconnected); it is also
    how long :meth:`close` may take to take effect when the stream is silent.
    Audio packets of the stream are handed to :attr:`on_audio` while it is set (the
    recorder copies them).
    """

    kind = "stream"

    def __init__(
        self,
        url: str,
        *,
        open_timeout: float = 10.0,
        read_timeout: float = 1.0,
        reconnect_timeout: float | None = None,
        options: dict[str, str] | None = None,
    ) -> None:
        super().__init__(url, reconnect_timeout)
        self.url = url
        self._timeouts = (open_timeout, read_timeout)
        self._options = {**_stream_options(url), **(options or {})}
        self._lock = threading.Lock()
        self._container: av.container.InputContainer | None = None
        self._pending: np.ndarray | None = None
        self.audio_stream: av.AudioStream | None = None
        self.on_audio = None  # callable(packet, captured) while recording
        self.connections = 0  # connections made so far (a reconnect makes a new one)
        self._reopen()
        assert self._pending is not None
        height, width = self._pending.shape[:2]
        self.info = VideoInfo(width=width, height=height, fps=self._fps, time_base=LIVE_TIME_BASE,
                              has_audio=self.audio_stream is not None, codec=self._codec, name=url)  # fmt: skip

    def _reopen(self) -> None:
        with self._lock:
            self._close_container()
            if self.closed:
                return
            try:
                container = av.open(self.url, options=self._options, timeout=self._timeouts, metadata_errors="replace")
            except (av.FFmpegError, OSError) as err:
                raise InputError(f"{self.url}: cannot open the stream ({' '.join(str(err).split())})") from None
            self._container = container
            self.connections += 1
            if not container.streams.video:
                self._close_container()
                raise InputError(f"{self.url}: the stream has no video")
            video = container.streams.video[0]
            video.codec_context.thread_type = "SLICE"  # frame threads would hold frames back
            self._video = video
            self._codec = video.codec_context.name
            rate = video.average_rate or video.guessed_rate or video.base_rate
            self._fps = float(rate) if rate and 0 < rate < 1000 else 30.0
            audio = [s for s in container.streams.audio if s.codec_context is not None]
            self.audio_stream = audio[0] if audio else None
            wanted = [video] + ([self.audio_stream] if self.audio_stream is not None else [])
            self._packets = container.demux(wanted)
            self._pending = None
            try:
                for image, _, extra in self._decode_some():
                    self._pending, self._pending_extra = image, extra
                    break
            except DeviceLost as err:
                self._close_container()
                raise InputError(f"{self.url}: no video frame could be decoded ({err})") from None
            if self._pending is None:
                self._close_container()
                raise InputError(f"{self.url}: the stream ended before its first frame")

    def _decode_some(self) -> Iterator[tuple[np.ndarray, float, dict]]:
        """Decoded frames of the open stream; audio packets go to ``on_audio``. Lock held."""
        try:
            for packet in self._packets:
                if self.closed:
                    return
                if packet.stream.type == "audio":
                    listener = self.on_audio
                    if listener is not None and packet.size:
                        listener(packet, time.monotonic())
                    continue
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    continue  # a damaged packet (lost UDP data): the decoder resyncs
                for frame in frames:
                    extra = {"stream_time": float(frame.time)} if frame.time is not None else {}
                    yield frame.to_ndarray(format="rgb24"), time.monotonic(), extra
        except (av.FFmpegError, OSError) as err:
            raise DeviceLost(" ".join(str(err).split())) from None
        raise DeviceLost("the stream ended")

    def _read(self) -> Iterator[RawFrame]:
        if self._pending is not None:
            image, self._pending = self._pending, None
            yield image, time.monotonic(), self._pending_extra
        decoded = self._decode_some()
        while not self.closed:
            with self._lock:
                if self._container is None:
                    return
                item = next(decoded, None)
            if item is None:
                return
            yield item

    def _close_container(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except (av.FFmpegError, OSError):
                pass

    def _release(self) -> None:
        # A read returns within read_timeout; the reading thread holds the lock meanwhile.
        if self._lock.acquire(timeout=self._timeouts[1] + 0.5):
            try:
                self._close_container()
            finally:
                self._lock.release()
