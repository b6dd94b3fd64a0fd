"""One long video as segments: cut at keyframes, annotated apart, warmed up on what precedes.

A segment is a run of frames ``[start, end)`` (indices in presentation order) that
begins at a keyframe, so it can be decoded on its own. Its worker runs it through the
same job as a whole video (:func:`~camvideo.jobs.annotate_video` with a
:class:`~camvideo.jobs.VideoPart`: a :class:`~camvideo.sources.FileSource` range), and
decodes a little more than the segment:

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
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from ..errors import InputError
from ..jobs import VideoPart
from ..sources.streams import video_stream

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
    time_base: Fraction  # the pts' unit

    @property
    def feed_to(self) -> int:
        return self.feed_from + len(self.pts)

    @property
    def frames(self) -> int:
        return self.end - self.start

    def part(self) -> VideoPart:
        """The stretch of the video its worker annotates: frames ``feed_from`` to ``feed_to - 1``
        (the end is one tick after the last one's pts: exclusive, exact), ``[start, end)`` written."""
        first, last = Fraction(self.pts[0]), Fraction(self.pts[-1] + 1)
        return VideoPart(first * self.time_base, last * self.time_base, self.feed_from, self.start, self.end)


@dataclass(frozen=True)
class VideoScan:
    """The video stream's frames as its packets tell: pts in presentation order, keyframes."""

    pts: list[int]  # sorted
    keyframes: list[int]  # sorted pts of keyframe packets
    time_base: Fraction


def scan_video(path: Path) -> VideoScan:
    """Demux (not decode) the whole video stream: every frame's pts and the keyframes.

    Costs a read of the file and microseconds per packet: a two-hour 30 fps video is
    216,000 packets, a couple of seconds.
    """
    pts: list[int] = []
    keyframes: list[int] = []
    try:
        with av.open(str(Path(path).absolute()), metadata_errors="replace") as container:
            stream = video_stream(container, path)
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
        segments.append(Segment(n, start, end, feed_from, tuple(pts[feed_from:feed_to]), tb))
    return segments
