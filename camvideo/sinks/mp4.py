"""Annotated frames out to an H.264 MP4, with the source's timestamps and audio.

:class:`Mp4Sink` writes to a hidden temporary file next to the target and renames it
over the target only when :meth:`Mp4Sink.close` succeeds, so the target path never
holds a half-written video (a crash, Ctrl-C or full disk leaves at most a
``.NAME.partial-XXXXXXXX.mp4`` that :meth:`Mp4Sink.abort` removes).

Each frame is encoded with the pts it came with, in the source's ``time_base``, so
variable-frame-rate video keeps its exact timing; the audio streams of the source are
copied packet for packet (never re-encoded) and interleaved with the video by time.

The video encoder is ``libx264`` (CPU, frame threads) or ``h264_nvenc`` (an NVIDIA
GPU's encoder, where it has one); ``encoder="auto"`` picks NVENC where it works. The
choice is made at the first frame, when the size is known, by
:mod:`camvideo.sinks.encoders` (:func:`encoder_available` probes by encoding one frame);
NVENC that does not work falls back to libx264 with a logged line, never an error.

The container follows the file's extension (:data:`CONTAINERS`): ``.mp4`` (MP4),
``.mov`` (QuickTime) or ``.mkv`` (Matroska), each with the H.264 video and the audio;
any other extension is refused before anything is written (:func:`container_format`),
rather than writing an MP4 under another name.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
from fractions import Fraction
from os import PathLike
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, VideoReformatter

from ..errors import OutputError
from ..options import X264_PRESETS
from ..types import FrameResult, VideoInfo
from .audio import AudioCopier, AudioFeed, FileAudio
from .base import Writer, check_output_folder, describe_os_error
from .encoders import ENCODERS, choose_encoder, configure

__all__ = ["CONTAINERS", "Mp4Sink", "container_format", "movie_timescale"]

#: Output extension -> FFmpeg muxer. Each holds H.264 and the audio codecs copied from
#: the sources that the container can hold (checked per stream by fits_container: MOV
#: cannot hold Opus, MP4 cannot hold G.711; such a stream is left out with a warning).
CONTAINERS: dict[str, str] = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}


def container_format(path: str | PathLike) -> str:
    """The muxer for an output path's extension; OutputError (one line, what is supported) otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in CONTAINERS:
        what = f"a {suffix} file" if suffix else "a file without an extension"
        raise OutputError(f"{path}: cannot write {what}; the annotated video can be {', '.join(CONTAINERS)} "
                          "(H.264 with the sound)")  # fmt: skip
    return CONTAINERS[suffix]


log = logging.getLogger(__name__)

# Output is tagged BT.709, limited range, and converted with that matrix, so players
# and camvideo's own FileSource read the colours back as they were written.
_BT709 = 1  # AVCOL_SPC_BT709 == AVCOL_PRI_BT709 == AVCOL_TRC_BT709


def movie_timescale(video_time_base: Fraction, audio_rates: list[int]) -> int:
    """A movie clock every track's start offset is a whole number of ticks of.

    A stream that does not start at 0 (MPEG-TS sources start anywhere) gets an
    MP4 "empty edit" measured in the movie timescale, by default 1/1000 s, which
    would round the first (and so every) timestamp to the millisecond. Using a
    multiple of each track's own timescale (the muxer's: the video time base
    doubled up to >= 10000, the audio sample rate) keeps them exact. Mp4Sink and the
    Ray join (which remuxes segments) both set it.
    """
    video = video_time_base.denominator or 1
    while video < 10000:
        video *= 2
    scale = video
    for rate in audio_rates:
        scale = math.lcm(scale, rate or 1)
    return scale if scale < 2**31 else video


class Mp4Sink(Writer):
    """Encode uint8 RGB frames to an H.264 (yuv420p, BT.709) MP4 with ``+faststart``.

    The video stream is sized from the first image written (so a side-by-side view of
    twice the source width is fine); later images must have that same size. yuv420p
    needs an even width and height and H.264 cannot crop 4:2:0 video by one pixel, so an
    odd-sized image gets one replicated row and/or column at the bottom/right edge: a
    641x479 input makes a 642x480 video.

    Args:
        path: the MP4 to make. Whether it may be overwritten is the caller's decision.
        info: the source's :class:`VideoInfo`; its ``time_base`` becomes the output
            video's, its ``fps`` is a rate-control hint.
        audio: where the audio comes from, copied unchanged into the output: a file
            (normally the source video itself) or an :class:`~camvideo.sinks.AudioFeed`
            (a live source's audio, retimed); None for no audio.
        crf: x264 constant rate factor, 0 (lossless) to 51. NVENC gets the same
            number as its constant-quality target (``rc=vbr``, ``cq``, no bit rate
            cap; crf 0 becomes cq 1).
        preset: x264 speed preset, one of :data:`X264_PRESETS`; NVENC gets the
            matching ``p1`` (ultrafast, superfast) .. ``p7`` (slower and up).
        threads: x264 encoding threads, 0 = as many as useful for the CPU count
            (x264's frame threads); also the RGB -> YUV conversion's swscale threads.
            NVENC ignores it. ``annotate`` passes its
            :class:`~camvideo.jobs.threads.ThreadPlan`'s share.
        encoder: ``"libx264"``, ``"h264_nvenc"`` or ``"auto"`` (NVENC where
            :func:`encoder_available` says it works at this size, logged at INFO,
            else libx264). An ``"h264_nvenc"`` that does not work here is a
            one-line warning and libx264. :attr:`encoder` says which one ran.

    Attributes:
        encoder: the encoder actually used, ``"libx264"`` or ``"h264_nvenc"``;
            None until the first frame (the choice depends on the size).

    :meth:`write` takes a :class:`~camvideo.types.FrameResult` (the writers' protocol);
    :meth:`encode` takes a bare image with its pts and time.

    Use as a context manager: an exception inside the block aborts (no output, temp
    file removed); a normal exit or Ctrl-C (KeyboardInterrupt) closes and keeps what
    was written.

    Raises:
        OutputError: the folder is missing or not writable, the disk is full, or an
            option is out of range (``encoder`` included).
        InputError: the ``audio`` file cannot be read.
    """

    def __init__(
        self,
        path: str | PathLike,
        info: VideoInfo,
        *,
        audio: str | PathLike | AudioFeed | None = None,
        crf: int = 23,
        preset: str = "veryfast",
        threads: int = 0,
        encoder: str = "libx264",
    ) -> None:
        super().__init__(path)
        self.info = info
        self.encoder: str | None = None  # chosen at the first frame
        self._crf, self._preset, self._threads, self._requested = crf, preset, threads, encoder
        self._out: av.container.OutputContainer | None = None
        self._audio: AudioCopier | None = None
        self._video: av.VideoStream | None = None
        self._size: tuple[int, int] | None = None  # (width, height) of the images written
        self._last_pts: int | None = None
        # One swscale context for the RGB -> yuv420p conversion, reused for every frame.
        self._reformatter = VideoReformatter()
        if not (isinstance(crf, int) and 0 <= crf <= 51):
            raise OutputError(f"{self.path}: crf must be a whole number from 0 to 51, not {crf!r}")
        if preset not in X264_PRESETS:
            raise OutputError(f"{self.path}: preset must be one of {', '.join(X264_PRESETS)}, not {preset!r}")
        if not (isinstance(threads, int) and threads >= 0):
            raise OutputError(f"{self.path}: threads must be 0 (auto) or more, not {threads!r}")
        if encoder not in ENCODERS:
            raise OutputError(f"{self.path}: encoder must be one of {', '.join(ENCODERS)}, not {encoder!r}")
        self.format = container_format(self.path)

        self._audio_source = audio
        self.open()

    def _open(self) -> None:
        folder = check_output_folder(self.path)
        # Same folder as the target, so the final os.replace() is an atomic rename on
        # one file system; hidden so folder scans (find_videos) skip it.
        self._temp = folder / f".{self.path.name}.partial-{secrets.token_hex(4)}{self.path.suffix.lower()}"
        audio = self._audio_source
        if audio is not None:
            feed = FileAudio(audio) if isinstance(audio, (str, PathLike)) else audio
            self._audio = AudioCopier(feed, self.path, self.format)
        try:
            # FFmpeg creates the file only when the first packet comes out of the encoder:
            # make it now, so a folder we cannot write in (a read-only mount, /proc, ACLs
            # that os.access does not see) fails here, before any frame is decoded.
            os.close(os.open(self._temp, os.O_WRONLY | os.O_CREAT, 0o666))
        except OSError as err:
            self._discard()
            raise OutputError(f"{self.path}: cannot create a file in {folder} ({describe_os_error(err)})") from err
        try:
            self._open_output()
        except (av.FFmpegError, OSError) as err:
            self._discard()
            raise OutputError(f"{self.path}: cannot create a file in {folder} ({describe_os_error(err)})") from err

    def _open_output(self) -> None:
        """(Re)create the output container on the temporary file; nothing is written yet."""
        options = {"movflags": "+faststart", "movie_timescale": str(self._movie_timescale())}
        if self.format == "matroska":
            options = {}  # movflags and movie_timescale are options of the MP4/MOV muxer only
        self._out = av.open(str(self._temp), mode="w", format=self.format, container_options=options)

    def _movie_timescale(self) -> int:
        rates = [s.codec_context.sample_rate for s in self._audio.streams] if self._audio is not None else []
        return movie_timescale(self.info.time_base, rates)

    # -- video ----------------------------------------------------------------------

    def _start(self, width: int, height: int) -> None:
        """Choose the encoder and add the streams, sized from the first image.

        The header follows on the first mux.
        """
        assert self._out is not None
        encoder = choose_encoder(self._requested, width, height, what=self.path)
        if encoder == "h264_nvenc":
            try:
                self._add_video(encoder, width, height).codec_context.open()
            except (av.FFmpegError, OSError) as err:
                # The probe passed but this open did not (another process took the
                # last NVENC session, say). Streams cannot be removed from a container,
                # but nothing is written yet: start a new one on the same file.
                log.warning("%s: h264_nvenc failed to start (%s); encoding with libx264 instead",
                            self.path, describe_os_error(err))  # fmt: skip
                self._out.close()
                self._open_output()
                encoder = "libx264"
        if encoder == "libx264":
            self._add_video(encoder, width, height)  # opened by the first encode() call
        self.encoder = encoder
        self._size = (width, height)
        if self._audio is not None and self._audio.active:
            self._audio.add_streams(self._out)

    def _add_video(self, encoder: str, width: int, height: int) -> av.VideoStream:
        """Add the video stream for ``encoder``: yuv420p, BT.709, the source's clock."""
        assert self._out is not None
        fps = self.info.fps if self.info.fps and self.info.fps > 0 else 25.0
        stream = self._out.add_stream(encoder, rate=Fraction(fps).limit_denominator(1_001_000))
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        # The encoder, and so every packet, counts in the source's time base: frame
        # pts pass through untouched and variable frame rates survive.
        stream.time_base = self.info.time_base
        codec = stream.codec_context
        codec.time_base = self.info.time_base
        configure(stream, encoder, crf=self._crf, preset=self._preset, threads=self._threads)
        codec.colorspace = codec.color_primaries = codec.color_trc = _BT709
        codec.color_range = ColorRange.MPEG
        self._video = stream
        return stream

    def _next_pts(self, pts: int | None, seconds: float) -> int:
        """The pts to encode with: the given one, or one derived from ``seconds``."""
        if pts is None:
            pts = round(Fraction(seconds).limit_denominator(10**9) / self.info.time_base)
        if self._last_pts is not None and pts <= self._last_pts:
            # Encoder and muxer reject repeated or backwards timestamps; nudge by one
            # tick rather than fail (only happens with pts=None or a broken source).
            log.debug("%s: pts %s not after %s, using %s", self.path, pts, self._last_pts, self._last_pts + 1)
            pts = self._last_pts + 1
        self._last_pts = pts
        return pts

    def _write(self, result: FrameResult) -> None:
        self._encode(result.image, result.frame.pts, result.frame.time)

    def encode(self, image: np.ndarray, pts: int | None, time: float) -> None:
        """Encode one uint8 RGB (H, W, 3) image shown at ``pts`` (in ``info.time_base``).

        ``time`` (seconds) is used when ``pts`` is None, and to decide how much of the
        audio goes into the file before this frame.

        Raises:
            OutputError: the disk is full or the file cannot be written (the partial
                output is removed first).
            ValueError: the image is not uint8 RGB, or not the size of the first one.
        """
        self._guarded(self._encode, image, pts, time)
        self.frames_written += 1

    def _encode(self, image: np.ndarray, pts: int | None, time: float) -> None:
        assert self._out is not None
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a uint8 RGB (H, W, 3) image, got {image.dtype} {image.shape}")
        height, width = image.shape[:2]
        if self._size is None:
            try:
                self._start(width, height)
            except (av.FFmpegError, OSError) as err:
                self._fail("cannot start the video", err)
        elif (width, height) != self._size:
            raise ValueError(f"image is {width}x{height} but this video is {self._size[0]}x{self._size[1]}")
        if width % 2 or height % 2:
            image = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame = self._reformatter.reformat(frame, format="yuv420p", dst_colorspace=Colorspace.ITU709,
                                           dst_color_range=ColorRange.MPEG, threads=self._threads)  # fmt: skip
        frame.pts = self._next_pts(pts, time)
        frame.time_base = self.info.time_base
        assert self._video is not None
        try:
            if self._audio is not None:
                self._audio.mux_until(self._out, time)
            self._out.mux(self._video.encode(frame))
        except (av.FFmpegError, OSError) as err:
            self._fail("cannot write", err)

    # -- finishing ------------------------------------------------------------------

    def _fail(self, what: str, err: BaseException) -> None:
        self.abort()  # inside a write, the protocol finishes this when the write returns
        raise OutputError(f"{self.path}: {what} ({describe_os_error(err)}); nothing was saved") from err

    def _finish(self) -> Path:
        """Flush the encoder, copy the rest of the audio, and move the file into place.

        Returns the target path. Calling close() again after success returns it again.

        Raises:
            OutputError: no frame was written, or the file could not be finished (the
                partial output is removed).
        """
        if self.frames_written == 0 or self._video is None or self._out is None:
            raise OutputError(f"{self.path}: no frames were written, so no video was made")
        try:
            self._out.mux(self._video.encode(None))
            if self._audio is not None:
                self._audio.mux_until(self._out, None)
            # Writes the trailer; +faststart then rewrites the file with the index first.
            self._out.close()
        except (av.FFmpegError, OSError) as err:
            self._fail("cannot finish", err)
        self._out = None
        if self._audio is not None:
            self._audio.close()
        try:
            os.replace(self._temp, self.path)
        except OSError as err:
            self._fail("cannot move the finished video into place", err)
        return self.path

    def _unlink_partial(self) -> None:
        try:
            self._temp.unlink()
        except (FileNotFoundError, AttributeError):
            pass
        except OSError as err:
            log.warning("%s: could not remove %s (%s)", self.path, self._temp, describe_os_error(err))

    def _discard(self) -> None:
        """Stop and delete the partial output; the target is left untouched. Idempotent."""
        # Unlink first: closing writes the trailer and, with +faststart, would copy the
        # whole partial file once more; with the name gone that second pass just fails.
        self._unlink_partial()
        if self._out is not None:
            try:
                self._out.close()
            except (av.FFmpegError, OSError):
                pass
            self._out = None
        if self._audio is not None:
            self._audio.close()
        try:
            self._temp.unlink()  # in case closing re-created it
        except (FileNotFoundError, AttributeError, OSError):
            pass

    def __repr__(self) -> str:
        return f"Mp4Sink({str(self.path)!r}, frames_written={self.frames_written})"
