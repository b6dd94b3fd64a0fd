"""One long video as segments: cut at keyframes, annotated apart, warmed up on what precedes.

A segment is a run of frames ``[start, end)`` (indices in presentation order) that
begins at a keyframe, so it can be decoded on its own. Its worker decodes a little more
than the segment:

* a **warm-up** before ``start``, so that the temporal smoother enters the segment in
  the state a one-worker run would have. The smoother forgets its past as
  exp(-Δt/τ) (see :class:`~camvideo.render.TemporalSmoother`); after
  ``WARMUP_TAUS`` = 16 time constants the state from before the warm-up weighs
  exp(-16) ≈ 1.1e-7, below float32's resolution, so the seams do not show;
* the rest of the model batch holding ``end - 1``, so every model call sees the same
  frames as in a one-worker run (batches are counted from frame 0): same inputs, same
  numbers.

Warm-up and tail frames go through the model and the smoother but are never written.
The class hysteresis is the one thing a warm-up cannot always reproduce: it remembers
which class was shown, however long ago. After the warm-up the two runs agree unless two
classes are within ``switch_ratio`` of each other during the whole warm-up.

Frame indices come from the packets: every video packet is one frame, so the sorted
packet pts are the frames' pts in presentation order (:func:`scan_video`). A stream with
damaged packets decodes fewer frames than that; the segment then reports the mismatch
and the video fails (annotate it with segments off).
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from av.video.reformatter import Colorspace  # noqa: F401  (the type yuv_matrix returns)

from ..errors import InputError
from ..sources.upright import orientation, turn_upright, yuv_matrix
from ..types import Frame

log = logging.getLogger(__name__)

#: Warm-up length in smoothing time constants: exp(-16) ≈ 1.1e-7 < float32 epsilon.
WARMUP_TAUS = 16.0


@dataclass(frozen=True)
class Segment:
    """Frames ``[start, end)`` of a video, and what to decode around them."""

    index: int  # k, from 0
    start: int  # first frame written
    end: int  # one past the last frame written
    feed_from: int  # first frame given to the model (warm-up; a multiple of the batch size)
    pts: tuple[int, ...]  # pts of frames feed_from, feed_from + 1, ... (up to the batch end)
    seek_pts: int  # the keyframe at or before frame ``feed_from``, decoding starts there

    @property
    def feed_to(self) -> int:
        return self.feed_from + len(self.pts)

    @property
    def frames(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class VideoScan:
    """The video stream's frames as its packets tell: pts in presentation order, keyframes."""

    pts: list[int]  # sorted
    keyframes: list[int]  # sorted pts of keyframe packets
    time_base: Fraction


def _video_stream(container: av.container.InputContainer) -> av.VideoStream:
    """The stream FileSource decodes: the first video stream that is not cover art."""
    streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not streams:
        raise InputError(f"{container.name}: has no video stream")
    return streams[0]


def video_duration(path: Path) -> float | None:
    """The video's duration in seconds from the container's header (no demuxing), or None."""
    try:
        with av.open(str(Path(path).absolute()), metadata_errors="replace") as container:
            stream = _video_stream(container)
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
            if container.duration:
                return container.duration / av.time_base
    except (av.FFmpegError, OSError) as err:
        raise InputError(f"{path}: not a video file that can be read ({err})") from err
    return None


def scan_video(path: Path) -> VideoScan:
    """Demux (not decode) the whole video stream: every frame's pts and the keyframes.

    Costs a read of the file and microseconds per packet: a two-hour 30 fps video is
    216,000 packets, a couple of seconds.
    """
    pts: list[int] = []
    keyframes: list[int] = []
    try:
        with av.open(str(Path(path).absolute()), metadata_errors="replace") as container:
            stream = _video_stream(container)
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                pts.append(int(packet.pts))
                if packet.is_keyframe:
                    keyframes.append(int(packet.pts))
            time_base = Fraction(stream.time_base or Fraction(1, 90000))
    except (av.FFmpegError, OSError) as err:
        raise InputError(f"{path}: cannot be read to the end ({err})") from err
    return VideoScan(sorted(pts), sorted(set(keyframes)), time_base)


def plan_segments(scan: VideoScan, seconds: float, warmup: float, batch: int) -> list[Segment]:
    """Cut at the first keyframe at or after every multiple of ``seconds``.

    ``warmup`` (seconds) is decoded and run before each segment but not written;
    ``batch`` is the model's batch size, whose grid (frame 0, batch, 2·batch, ...) each
    segment keeps. One segment (or none, for an empty scan) means: do not split.
    """
    pts, tb = scan.pts, scan.time_base
    if not pts:
        return []
    first = pts[0]
    index_of = {p: i for i, p in enumerate(pts)}
    keys = sorted(index_of[k] for k in scan.keyframes if k in index_of)
    starts = [0]
    k = 1
    while True:
        target = first + seconds * k / tb  # pts of the k-th cut's time
        at = bisect.bisect_left(keys, bisect.bisect_left(pts, target))
        if at >= len(keys):
            break
        cut = keys[at]
        if cut > starts[-1]:
            starts.append(cut)
        # the next cut is at least ``seconds`` after this one
        k = max(k + 1, int((pts[cut] - first) * tb / seconds) + 1)
    segments = []
    bounds = starts + [len(pts)]
    for n, (start, end) in enumerate(zip(bounds, bounds[1:])):
        warm_pts = pts[start] - warmup / tb
        warm = bisect.bisect_left(pts, warm_pts)
        feed_from = (min(warm, start) // batch) * batch
        feed_to = min(-(-end // batch) * batch, len(pts))
        seek = [p for p in scan.keyframes if p <= pts[feed_from]]
        seek_pts = seek[-1] if seek else scan.keyframes[0] if scan.keyframes else pts[0]
        segments.append(Segment(n, start, end, feed_from, tuple(pts[feed_from:feed_to]), seek_pts))
    return segments


class SegmentSource:
    """Decode frames ``segment.feed_from`` .. ``segment.feed_to - 1`` of a video.

    Seeks to the segment's keyframe and decodes from there; frames before
    ``feed_from`` are dropped unconverted. Each :class:`~camvideo.types.Frame` carries
    its index in the whole video and ``extra["write"]`` (whether it is inside
    ``[start, end)``). Pixels and timestamps are those :class:`~camvideo.sources.FileSource`
    gives for the same frames: the same colour matrix and range, the same upright turn
    (``tests/test_ray.py`` compares them).
    """

    def __init__(self, path: str | Path, segment: Segment) -> None:
        self.path = Path(path)
        self.segment = segment
        self.frames_decoded = 0
        self._closed = False
        try:
            self._container = av.open(str(self.path.absolute()), mode="r", metadata_errors="replace")
        except (av.FFmpegError, OSError) as err:
            raise InputError(f"{self.path}: not a video file that can be read ({err})") from err
        self._stream = _video_stream(self._container)
        self._stream.codec_context.thread_type = "AUTO"
        self._stream.codec_context.thread_count = 0

    def __iter__(self) -> Iterator[Frame]:
        seg = self.segment
        index_of = {p: seg.feed_from + i for i, p in enumerate(seg.pts)}
        first_pts = seg.pts[0]
        steps = None
        stored = None
        try:
            self._container.seek(seg.seek_pts, backward=True, any_frame=False, stream=self._stream)
            for packet in self._container.demux(self._stream):
                if self._closed:
                    return
                for av_frame in packet.decode():
                    if av_frame.pts is None or av_frame.pts < first_pts:
                        continue
                    index = index_of.get(int(av_frame.pts))
                    if index is None:
                        log.debug("%s: frame at pts %s is not in the plan, skipped", self.path, av_frame.pts)
                        continue
                    if steps is None:
                        steps, _ = orientation(av_frame)
                        stored = (av_frame.width, av_frame.height)
                    yield self._to_frame(av_frame, index, steps, stored)
                    self.frames_decoded += 1
                    if index + 1 >= seg.feed_to:
                        return
        except av.FFmpegError as err:
            raise InputError(f"{self.path}: segment {seg.index} cannot be decoded ({err})") from err

    def _to_frame(self, frame: av.VideoFrame, index: int, steps, stored) -> Frame:
        captured = time.monotonic()
        kwargs = {"src_colorspace": yuv_matrix(frame)}
        if frame.color_range:  # full-range YUV must not be stretched again
            kwargs["src_color_range"] = frame.color_range
        if (frame.width, frame.height) != stored:
            kwargs["width"], kwargs["height"] = stored
        image = turn_upright(frame.to_ndarray(format="rgb24", **kwargs), steps)
        seg = self.segment
        return Frame(index=index, image=image, pts=int(frame.pts), time=float(frame.time), captured=captured,
                     extra={"write": seg.start <= index < seg.end})  # fmt: skip

    def close(self) -> None:
        self._closed = True

    def release(self) -> None:
        """Close the file (after the pipeline has stopped reading)."""
        self._closed = True
        try:
            self._container.close()
        except (av.FFmpegError, OSError):
            pass

    def __enter__(self) -> SegmentSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
