"""Video files as a stream of upright RGB :class:`~camvideo.video.Frame` objects.

:class:`FileSource` wraps one PyAV input container. It opens the file and decodes the
first frame up front, so every problem the user can fix (missing file, not a video,
audio only, nothing decodable) surfaces as one :class:`~camvideo.errors.InputError`
before any work starts, and :attr:`FileSource.info` can report the *upright* size.

Timestamps are carried from the decoder untouched (``frame.pts`` in the stream's
``time_base``) so that :class:`~camvideo.sinks.Mp4Sink` can write them back and a
variable-frame-rate video keeps its timing exactly.

Hardware decoding (``FileSource(path, hwaccel="cuda")``: NVDEC through PyAV's
:class:`~av.codec.hwaccel.HWAccel`) is an optimisation, never a requirement: when the
device, its driver or the stream's profile does not allow it, the file is opened again
in software and the fallback is logged at INFO level (the CLI shows warnings only).
Decoded frames are downloaded to system memory either way, so everything after the
decoder (colour matrix, rotation, timestamps) is the same code path.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from fractions import Fraction
from os import PathLike
from pathlib import Path

import av
from av.codec.hwaccel import HWAccel, hwdevices_available
from av.video.reformatter import VideoReformatter

from ..errors import InputError
from ..types import Frame, VideoInfo
from .hwdecode import hardware_failure, hardware_unused, one_line
from .streams import check_video_file, index_past_end, video_stream
from .upright import orientation, turn_upright, yuv_matrix

__all__ = ["FileSource"]

log = logging.getLogger(__name__)

_MAX_LEADING_ERRORS = 250  # undecodable packets before the first frame before we give up

_THREAD_TYPES = frozenset({"AUTO", "FRAME", "SLICE", "NONE"})


class FileSource:
    """Decode a video file into upright uint8 RGB frames with the decoder's timestamps.

    The container is opened and the first frame decoded in the constructor, so errors
    come early and :attr:`info` is exact. Iterate to get :class:`Frame` objects; each
    ``__iter__`` call starts again from the beginning (an older iterator stops).

    Frames come out as a player shows them: the display matrix (rotation metadata) is
    applied, and ``info.rotation`` says by how many degrees clockwise they were turned
    (0/90/180/270, counted like the classic ``rotate`` tag; a mirror is applied but not
    reported). ``info.width``/``height`` are the upright size.

    Every frame has the size of the first: a stream that changes resolution midway (a
    recording across a broadcast switch) is scaled back to it, with a warning.

    Damaged packets in the middle of the file are skipped and counted in
    :attr:`frames_lost`; a truncated file yields what decodes, then stops (the missing
    remainder is added to :attr:`frames_lost` when the container said how many frames
    there were). :meth:`close` may be called from another thread: the iterator checks
    for it before every packet and stops promptly.

    With ``hwaccel`` (a PyAV hardware device type, ``"cuda"`` for NVDEC), the file is
    first opened with that decoder and its first frame decoded; if anything fails on
    the way (no device or driver, an error at open or at the first decode, no frame at
    all, a codec or profile the device cannot decode) the whole open is done again in
    software, logged with ``log.info``. :attr:`hwaccel` and :attr:`decoder` say what is
    actually decoding.

    Args:
        path: the video file.
        threads: decoder threading, one of ``"AUTO"`` (frame + slice threads),
            ``"FRAME"``, ``"SLICE"`` or ``"NONE"``.
        hwaccel: hardware device type to decode on (one of
            :func:`av.codec.hwaccel.hwdevices_available`, e.g. ``"cuda"``), or None
            for software decoding.
        start, end: a range (a Ray segment) in seconds on the stream's clock (``Frame.time``, pts x
            time base, compared exactly: a Fraction gives an exact frame): the frames with ``start <=
            time < end``, from the first at or after ``start``; None: no bound. Decoding starts at the
            keyframe at or before ``start``; a range gives what the whole file gives for its frames
            (``info`` is the whole file's, whose first frame sets every frame's size).
        first_index: ``Frame.index`` of the first frame yielded (its place in the whole video).
        decoder_threads: decoder (``thread_count``) and RGB conversion threads; 0: FFmpeg's choice.

    Attributes:
        hwaccel: the device type actually decoding, None for software.
        decoder: the decoder in words, e.g. ``"h264"`` or ``"h264 (cuda)"``.

    Raises:
        InputError: missing file, folder, empty file, not a media file, no video
            stream, no decoder for it, or no frame could be decoded (in software:
            a hardware failure is never what is reported).
        ValueError: ``threads`` or ``hwaccel`` is not a known name (a programming
            error: the command line only offers valid ones).
    """

    def __init__(self, path: str | PathLike, *, threads: str = "AUTO", hwaccel: str | None = None,
                 start: float | Fraction | None = None, end: float | Fraction | None = None,
                 first_index: int = 0, decoder_threads: int = 0) -> None:  # fmt: skip
        if not isinstance(threads, str) or threads.upper() not in _THREAD_TYPES:
            raise ValueError(f"threads must be AUTO, FRAME, SLICE or NONE, not {threads!r}")
        # HWAccel() itself accepts any string (an unknown one silently means "any
        # device"), so the name is checked here.
        if hwaccel is not None and hwaccel not in hwdevices_available():
            known = ", ".join(hwdevices_available()) or "none in this FFmpeg build"
            raise ValueError(f"hwaccel must be a hardware device type ({known}), not {hwaccel!r}")
        self.path = Path(path)
        self.hwaccel: str | None = None
        self.decoder = ""
        self.frames_lost = 0
        self._container: av.container.InputContainer | None = None
        # Held while PyAV touches the container, so close() from another thread never
        # frees it under a running demux/decode call (that would crash, not raise).
        self._lock = threading.Lock()
        self._closed = False
        self._generation = 0
        self._started = False  # whether the pending first frames have been handed out
        self._truncated = False
        self._pending: deque[av.VideoFrame] = deque()
        self._start = None if start is None else Fraction(start)
        self._end = None if end is None else Fraction(end)
        self._first_index = first_index
        self._decoder_threads = decoder_threads
        # One swscale context for the stream, reused (frame.reformat() builds one a frame).
        self._reformatter = VideoReformatter()
        self._convert_lock = threading.Lock()
        check_video_file(self.path)
        if hwaccel is not None:
            self._open_hw(threads, hwaccel)
        try:
            if self._container is None:  # software, asked for or as the fallback
                self._open(threads, None)
                self.decoder = self.info.codec
            if self._start is not None:
                self._seek_to_start()
        except BaseException:
            self.close()  # the container too: a failed open leaves nothing open
            raise

    # -- opening --------------------------------------------------------------------

    def _open(self, threads: str, hwaccel: str | None) -> None:
        """Open the container (on ``hwaccel``'s device) and decode the first frame."""
        # Frames are downloaded to system memory (is_hw_owned=False), so the RGB
        # conversion below is the same as for software frames. allow_software_fallback
        # lets FFmpeg decode a stream the device cannot handle in software instead of
        # failing; _open_hw notices that and starts again without the device.
        extra = {} if hwaccel is None else {"hwaccel": HWAccel(device_type=hwaccel, allow_software_fallback=True)}
        try:
            # An absolute path never parses as an FFmpeg protocol ("a:b.mp4" would).
            self._container = av.open(str(self.path.absolute()), mode="r", metadata_errors="replace", **extra)
        except (av.FFmpegError, OSError) as err:
            raise InputError(f"{self.path}: not a video file that can be read ({one_line(err)})") from err
        self._open_stream(threads)

    def _open_hw(self, threads: str, hwaccel: str) -> None:
        """Try to open the file on ``hwaccel``; on any failure leave it closed, logged.

        The failure can come at open (no device: EPERM/ENODEV from the driver), at the
        first decode, or as no frame at all; and FFmpeg's own fallback may decode in
        software inside the device's container. Each ends in a plain software open by
        the caller, so software decoding behaves exactly as without ``hwaccel``.
        """
        try:
            self._open(threads, hwaccel)
            reason = self._hw_not_used(hwaccel)
        except Exception as err:  # noqa: BLE001 - any failure means "use software"
            # No container yet: the device (or the file) could not be opened at all.
            stage = "open" if self._container is None else "first frame"
            reason = f"{stage} failed: {hardware_failure(err, self.path)}"
        except BaseException:  # Ctrl-C while opening: release the file, don't retry
            self.close()
            raise
        if reason is None:
            self.hwaccel = hwaccel
            self.decoder = f"{self.info.codec} ({hwaccel})"
            log.debug("%s: decoding %s on %s", self.path, self.info.codec, hwaccel)
            return
        log.info("%s: %s hardware decoding not used (%s); decoding in software", self.path, hwaccel, reason)
        # Closed before the software open: the device context and the file go with it.
        with self._lock:
            self._release()
        self.frames_lost = 0
        self._truncated = False

    def _hw_not_used(self, hwaccel: str) -> str | None:
        """None when the first frame came from ``hwaccel``'s device, else why not."""
        return hardware_unused(self._stream.codec_context, hwaccel, self.info.codec)

    def _open_stream(self, threads: str) -> None:
        container = self._container
        assert container is not None
        stream = video_stream(container, self.path)  # checked: a video stream with a decoder
        codec_name = stream.codec_context.name
        stream.codec_context.thread_type = threads.upper()  # checked in __init__
        stream.codec_context.thread_count = self._decoder_threads  # 0: FFmpeg picks from the CPU count
        self._stream = stream
        self._packets = container.demux(stream)

        # Decode until the first frame: proves the file is usable and gives the real
        # (upright) size and the display matrix, which PyAV only exposes on frames.
        while not self._pending:
            # Give up after a run of undecodable packets rather than read a whole
            # broken file before saying so.
            if not self._decode_next() or self.frames_lost > _MAX_LEADING_ERRORS:
                raise InputError(f"{self.path}: no video frame could be decoded ({codec_name} codec)")
        self._cut_short = index_past_end(stream, self.path)
        first = self._pending[0]
        self._orientation, rotation = orientation(first)

        width, height = first.width, first.height
        self._stored_size = (width, height)  # every frame comes out this size (before turning)
        self._resized_warned = False
        if self._orientation[0] % 2:  # a quarter turn swaps width and height
            width, height = height, width
        time_base = stream.time_base or Fraction(1, 90000)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        # fps is only a hint (progress, encoder rate control); 25 when nothing says.
        self._fps = float(rate) if rate and rate > 0 else 25.0
        duration = None
        if stream.duration:
            duration = float(stream.duration * time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        self.info = VideoInfo(
            width=width,
            height=height,
            fps=self._fps,
            time_base=Fraction(time_base),
            frame_count=stream.frames or None,
            duration=duration,
            rotation=rotation,
            has_audio=bool(container.streams.audio),
            codec=codec_name,
            name=self.path.name,
        )

    # -- decoding -------------------------------------------------------------------

    def _decode_next(self) -> bool:
        """Demux and decode one packet into ``_pending``; False at the end of the file.

        Caller holds ``_lock`` (or is the constructor).
        """
        try:
            packet = next(self._packets)
        except StopIteration:
            return False  # demux() already sent the empty packet that drains the decoder
        except (av.FFmpegError, OSError) as err:
            # The container itself is damaged or cut short: keep what is decoded so far.
            log.warning("%s: stopped reading at a damaged or truncated spot (%s)", self.path, one_line(err))
            self._truncated = True
            self._drain()
            return False
        try:
            self._pending.extend(packet.decode())
        except av.FFmpegError as err:
            # One bad packet: skip it and keep going; the decoder resynchronises at
            # the next keyframe (or conceals), so the rest still decodes.
            self.frames_lost += 1
            log.debug("%s: packet at pts %s failed to decode (%s)", self.path, packet.pts, one_line(err))
        return True

    def _drain(self) -> None:
        """Flush frames still inside the decoder (frame threads, B-frame reordering)."""
        try:
            self._pending.extend(self._stream.codec_context.decode(None))
        except (av.FFmpegError, OSError):
            pass

    def _rewind(self) -> None:
        """Start demuxing from the beginning (of the range) again (second and later ``__iter__``)."""
        if self._start is not None:
            self._seek_to_start()
        else:
            self._seek(0)

    def _seek(self, pts: int) -> None:
        """Demux from the keyframe at or before ``pts`` (the stream's time base), the decoder emptied."""
        container = self._container
        assert container is not None
        try:
            container.seek(pts, backward=True, any_frame=False, stream=self._stream)
            self._stream.codec_context.flush_buffers()
        except (av.FFmpegError, OSError) as err:
            raise InputError(f"{self.path}: cannot seek in the video ({one_line(err)})") from err
        self._pending.clear()
        self._packets = container.demux(self._stream)
        self.frames_lost = 0
        self._truncated = False

    def _seek_to_start(self) -> None:
        """Decode from the keyframe at or before the range's start to its first frame (caller holds ``_lock``)."""
        time_base = self.info.time_base
        self._seek(math.floor(self._start / time_base))
        first = True
        while True:
            while not self._pending:
                if not self._decode_next():
                    raise InputError(f"{self.path}: no frame at or after {float(self._start):.3f} s")
            if first and self._pending[0].pts is not None and self._pending[0].pts * time_base > self._start:
                self._seek(0)  # landed past the start (a container without an index): from the beginning
            first = False
            while self._pending and self._pending[0].pts is not None and self._pending[0].pts * time_base < self._start:
                self._pending.popleft()
            if self._pending:
                return

    def _after_end(self, frame: av.VideoFrame) -> bool:
        """Whether ``frame`` is past the range's end (a frame without a timestamp never is)."""
        return self._end is not None and frame.pts is not None and frame.pts * self.info.time_base >= self._end

    def _to_frame(self, frame: av.VideoFrame, index: int) -> Frame:
        captured = time.monotonic()
        # swscale converts any pixel format (10-bit, 4:4:4, gray, palettes) to rgb24;
        # it only needs to be told which YUV matrix and range the frame uses.
        kwargs = {"src_colorspace": yuv_matrix(frame)}
        if frame.color_range:  # full-range ("JPEG") YUV must not be stretched again
            kwargs["src_color_range"] = frame.color_range
        if (frame.width, frame.height) != self._stored_size:
            # The stream changed resolution (a TS recording across a switch, a damaged
            # header): one video has one size, so scale to the first frame's.
            kwargs["width"], kwargs["height"] = self._stored_size
            if not self._resized_warned:
                self._resized_warned = True
                log.warning("%s: the video changes size from %dx%d to %dx%d at frame %d; scaled to %dx%d",
                            self.path, *self._stored_size, frame.width, frame.height, index, *self._stored_size)  # fmt: skip
        with self._convert_lock:
            rgb = self._reformatter.reformat(frame, format="rgb24", threads=self._decoder_threads, **kwargs)
        image = turn_upright(rgb.to_ndarray(), self._orientation)
        if frame.pts is not None:
            pts, seconds = int(frame.pts), float(frame.time)
        else:
            pts, seconds = None, index / self._fps
        return Frame(index=index, image=image, pts=pts, time=seconds, captured=captured)

    def __iter__(self) -> Iterator[Frame]:
        with self._lock:
            if self._closed:
                return iter(())  # closed (perhaps by another thread): nothing more to read
            if self._started:
                self._rewind()
            self._started = True
            self._generation += 1
            generation = self._generation
        return self._frames(generation)

    def _frames(self, generation: int) -> Iterator[Frame]:
        index = self._first_index
        more = True
        try:
            while more:
                with self._lock:
                    # Checked once per packet: close() from another thread, or a newer
                    # iterator that rewound the container, ends this one.
                    if self._closed or generation != self._generation:
                        return
                    more = bool(self._pending) or self._decode_next()
                    batch = list(self._pending)
                    self._pending.clear()
                # Converting to RGB needs only the frame, so it runs without the lock.
                for av_frame in batch:
                    if self._closed or self._after_end(av_frame):
                        return
                    yield self._to_frame(av_frame, index)
                    index += 1
        finally:
            if self._closed and self._container is not None:
                # close() came while this thread was inside a demux/decode call and
                # did not wait for it: the file is released here instead.
                with self._lock:
                    self._release()
        whole = self._start is None and self._end is None  # the container's frame count is the whole file's
        if (self._truncated or self._cut_short or self.frames_lost) and self.info.frame_count and whole:
            # A damaged or cut file whose container promised more frames than arrived:
            # those are lost too (frames that needed a lost keyframe decode to nothing,
            # without an error of their own).
            self.frames_lost = max(self.frames_lost, self.info.frame_count - index)
        if self.frames_lost:
            log.warning("%s: %d frame(s) could not be decoded and were skipped", self.path, self.frames_lost)

    # -- closing --------------------------------------------------------------------

    #: Seconds :meth:`close` waits for a demux/decode call running in another thread.
    CLOSE_WAIT = 0.5

    def close(self) -> None:
        """Release the file. Idempotent, safe from any thread; running iterators stop.

        A demux/decode call in progress in another thread (a stalled network drive) is
        waited for at most :attr:`CLOSE_WAIT` seconds, so stopping never hangs on it;
        that thread then releases the file itself when its call returns.
        """
        self._closed = True
        if self._lock.acquire(timeout=self.CLOSE_WAIT):
            try:
                self._release()
            finally:
                self._lock.release()

    def _release(self) -> None:
        """Close the container (caller holds ``_lock``)."""
        self._pending.clear()
        if self._container is not None:
            try:
                self._container.close()
            except (av.FFmpegError, OSError):
                pass
            self._container = None

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        hw = f", hwaccel={self.hwaccel!r}" if self.hwaccel else ""
        return f"FileSource({str(self.path)!r}{hw})"
