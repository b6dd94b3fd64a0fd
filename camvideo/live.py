"""Live sources: cameras, network streams, and video files played in real time.

Every source yields :class:`~camvideo.video.Frame` objects whose ``captured`` is the
``time.monotonic()`` at which the frame was grabbed (camera, stream) or became due
(paced file), so the app can measure capture-to-display latency; ``time`` is seconds
since the source started (it keeps growing across reconnects and loops, so smoothing
and recordings see one clock) and ``pts`` counts that time in :data:`LIVE_TIME_BASE`.

* :class:`CameraSource`: a webcam by index or device path, through OpenCV's
  ``VideoCapture`` (buffer size 1) or PyAV's v4l2 / avfoundation / dshow input.
* :class:`StreamSource`: rtsp://, http(s)://, udp://, tcp:// ... through PyAV, with
  FFmpeg's input buffering turned off.
* :class:`PacedFileSource`: a video file at its own frame rate, optionally looped.

A camera or stream that stops delivering is reported in :attr:`LiveSource.status`
and reopened until it comes back (or ``reconnect_timeout`` passes, then
:class:`~camvideo.errors.SourceLost`). Pause, single steps and replays go through a
:class:`~camvideo.pipeline.Gate`; :meth:`LiveSource.close` works from any thread.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from os import PathLike
from pathlib import Path

import av
import numpy as np

from .errors import InputError, SourceLost
from .pipeline import Gate
from .sources import FileSource
from .video import Frame, VideoInfo

__all__ = [
    "LIVE_TIME_BASE", "STREAM_SCHEMES", "LiveSource", "CameraSource", "StreamSource", "PacedFileSource",
    "CameraInfo", "list_cameras", "open_live_source", "describe_spec",
]  # fmt: skip

log = logging.getLogger(__name__)

#: Unit of live frames' ``pts`` (the MPEG clock: exact for 24, 25, 30, 50, 60 fps).
LIVE_TIME_BASE = Fraction(1, 90000)
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "rtp", "srt")

_Raw = tuple[np.ndarray, float, dict]  # (RGB image, captured, extra) from a device read


class _Lost(Exception):
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
                    yield Frame(last.index, last.image, last.pts, last.time, time.monotonic(), {**last.extra, "replay": True})
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


class _Reconnecting(LiveSource):
    """A device that may disappear: read until it fails, report it, reopen with backoff."""

    def __init__(self, name: str, reconnect_timeout: float | None) -> None:
        super().__init__(name)
        self.reconnect_timeout = reconnect_timeout

    def _read(self) -> Iterator[_Raw]:
        """Frames from the open device; raises :class:`_Lost` (or returns) when it stops."""
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
            except _Lost as err:
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


class CameraSource(_Reconnecting):
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

    def _read(self) -> Iterator[_Raw]:
        while not self.closed:
            with self._lock:
                if self._pending is not None:
                    image, self._pending = self._pending, None
                elif self._capture is None:
                    raise _Lost("closed")
                elif self.backend == "opencv":
                    ok, bgr = self._capture.read()  # type: ignore[attr-defined]
                    if not ok or bgr is None:
                        raise _Lost("no frame from the camera")
                    import cv2

                    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                else:
                    try:
                        image = next(self._av_frames).to_ndarray(format="rgb24")  # type: ignore[arg-type]
                    except StopIteration:
                        raise _Lost("the camera stopped") from None
                    except (av.FFmpegError, OSError) as err:
                        raise _Lost(" ".join(str(err).split())) from None
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


class StreamSource(_Reconnecting):
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
            except _Lost as err:
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
            raise _Lost(" ".join(str(err).split())) from None
        raise _Lost("the stream ended")

    def _read(self) -> Iterator[_Raw]:
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


# -- choosing a source ----------------------------------------------------------------------------


def describe_spec(spec: str) -> str:
    """What a SOURCE argument names: "camera", "stream", "file" or "sample"."""
    text = spec.strip()
    if text.lower() == "sample":
        return "sample"
    bare = text.removeprefix("av:")
    if bare.isdigit() or bare.startswith("/dev/video") or (text.startswith("av:") and bare):
        return "camera"
    if "://" in text and text.split("://", 1)[0].lower() in STREAM_SCHEMES:
        return "stream"
    return "file"


def open_live_source(
    spec: str | PathLike | None,
    *,
    loop: bool = True,
    reconnect_timeout: float | None = None,
) -> LiveSource:
    """Open what a SOURCE argument names.

    ``None``: the first camera that opens, else the bundled sample video (looped, so
    there is always something to show). ``"0"``, ``"1"``, ``/dev/video2``: a camera
    (OpenCV); ``av:0`` / ``av:/dev/video0`` / ``av:video=NAME``: a camera through PyAV.
    ``rtsp://`` ``http(s)://`` ``udp://`` ``tcp://`` ...: a stream. ``sample``: the
    bundled sample. Anything else: a video file, played in real time.

    Raises:
        InputError: the camera is missing or busy, the stream cannot be reached, the
            file is not a video; the message says which.
    """
    from .samples import sample_video

    if spec is None:
        for camera in list_cameras():
            try:
                return CameraSource(camera.spec, reconnect_timeout=reconnect_timeout)
            except InputError as err:
                log.info("%s", err)
        return PacedFileSource(sample_video(), loop=True)
    text = str(spec).strip()
    kind = describe_spec(text)
    if kind == "sample":
        return PacedFileSource(sample_video(), loop=loop)
    if kind == "camera":
        backend = "av" if text.startswith("av:") else "opencv"
        return CameraSource(text.removeprefix("av:"), backend=backend, reconnect_timeout=reconnect_timeout)
    if kind == "stream":
        return StreamSource(text, reconnect_timeout=reconnect_timeout)
    path = Path(text)
    if not path.exists() and "://" in text:
        raise InputError(f"{text}: unknown stream protocol; use one of {', '.join(STREAM_SCHEMES)}")
    if not path.exists():
        raise InputError(f"{text}: not a camera index, device, stream URL or existing video file")
    return PacedFileSource(path, loop=loop)
