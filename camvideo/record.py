"""Recording a live session: the displayed overlay to an MP4, with the source's audio.

Video goes through :class:`~camvideo.sinks.Mp4Sink`, the encoder ``annotate`` uses, in a
thread of its own fed through a bounded queue (a recorder that falls behind drops
frames, counted, rather than stall the display). Timestamps are the frames' live clock
from the first recorded frame, so the file plays at the pace it was captured.

Audio: a file played live gets its own audio from the recorded position on, following
loops (:class:`_FileAudio`); a network stream's audio packets are copied as they
arrive (:class:`_StreamAudio`); cameras have none. Packets are copied, never
re-encoded, and retimed onto the recording's clock.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import av

from .annotator import FrameResult
from .errors import OutputError
from .live import LIVE_TIME_BASE, LiveSource, PacedFileSource, StreamSource
from .pipeline import DropWorker, Mailbox
from .sinks import Mp4Sink, _fits_mp4, check_output_folder
from .video import Frame, VideoInfo

__all__ = ["LiveRecorder", "check_recording_path"]

log = logging.getLogger(__name__)

_QUEUE = 90  # frames (3 s at 30 fps) the encoder may fall behind before frames are dropped


def check_recording_path(path: Path) -> Path:
    """Refuse what cannot become a recording: not .mp4, existing, folder missing."""
    if path.suffix.lower() != ".mp4":
        raise OutputError(f"{path}: recordings are MP4 files; give a name ending in .mp4")
    if path.exists():
        raise OutputError(f"{path}: already exists; choose another name")
    check_output_folder(path)
    return path


class _AudioFeed:
    """Audio packets retimed onto the recording's clock; what :class:`_TapSink` copies."""

    streams: list[av.AudioStream]
    end: float | None = None  # recording seconds after which no packet is given (set at the end)

    def packets(self) -> Iterator[av.Packet]:
        raise NotImplementedError

    def end_at(self, seconds: float) -> None:
        """The recording ends at ``seconds``: the rest of the audio is not wanted."""
        self.end = seconds

    def close(self) -> None:
        """Called by the sink when it is done with the audio (and on errors)."""


class _FileAudio(_AudioFeed):
    """The audio of a file played by a :class:`PacedFileSource`, from ``first``'s position.

    A packet at file time ``q`` in pass ``L`` lands at ``(L - L0) * period + q - q0``
    seconds of the recording, where the first recorded frame was at ``q0`` in pass ``L0``:
    exactly where the video of that moment is (pauses stop both alike).
    """

    def __init__(self, source: PacedFileSource, first: Frame) -> None:
        self._source = source
        self._q0 = float(first.extra.get("source_time", 0.0))
        self._loop0 = int(first.extra.get("loop", 0))
        self._container = av.open(str(source.path.absolute()), metadata_errors="replace")
        self.streams = [s for s in self._container.streams.audio if _fits_mp4(s)]

    def _period(self) -> float:
        info = self._source.file_info  # the file's own length, until a pass has been timed
        estimate = info.frame_count / info.fps if info.frame_count and info.fps else (info.duration or 0.0)
        return self._source.period or estimate

    def packets(self) -> Iterator[av.Packet]:
        base = self._source.base or 0.0
        last: dict[int, int] = {}
        loop = self._loop0
        self._container.seek(max(0, int((self._q0 - 1.0) * av.time_base)), backward=True)
        while True:
            for packet in self._container.demux(self.streams):
                if not packet.size or packet.pts is None or packet.time_base is None:
                    continue
                q = float(packet.pts * packet.time_base)
                period = self._period()
                if period and q - base >= period:
                    continue  # audio running past the video's end: the next pass starts instead
                seconds = (loop - self._loop0) * period + q - self._q0
                if seconds < 0:
                    continue
                if self.end is not None and seconds >= self.end:
                    return
                pts = round(seconds / packet.time_base)
                if pts <= last.get(packet.stream.index, -1):
                    continue
                last[packet.stream.index] = pts
                packet.pts = packet.dts = pts
                yield packet
            if not self._source.loop or not self._period():
                return
            loop += 1
            self._container.seek(0, backward=True)

    def close(self) -> None:
        try:
            self._container.close()
        except (av.FFmpegError, OSError):
            pass


class _StreamAudio(_AudioFeed):
    """A stream's audio packets as they arrive, retimed by the video's stream-to-live offset.

    The source's packets belong to its connection, which a reconnect closes: each one is
    copied on arrival, and its stream is a template this feed owns (an in-memory
    container), so nothing here points into a closed connection. A reconnect ends the
    recording's audio (the new connection's clock is another one). Packets wait in a
    mailbox; the sink asks for audio up to each video frame's time, which normally has
    arrived already (audio and video come interleaved). A gap of more than a second
    ends the audio rather than stall the video.
    """

    def __init__(self, source: StreamSource, first: Frame) -> None:
        self._source = source
        self._box: Mailbox[tuple[av.Packet, float]] = Mailbox(size=2000)
        stream = source.audio_stream
        assert stream is not None
        self._holder = av.open(io.BytesIO(), mode="w", format="mp4")
        self.streams = [self._holder.add_stream_from_template(stream)] if _fits_mp4(stream) else []
        self._connection = source.connections
        # live seconds = stream seconds + shift; 0 on the recording's clock is first.time
        stream_time = first.extra.get("stream_time")
        self._shift = first.time - stream_time if stream_time is not None else None
        self._t0 = first.time
        self._start_live = first.captured - first.time  # monotonic time of live 0
        source.on_audio = self._arrived

    def _arrived(self, packet: av.Packet, arrived: float) -> None:
        """In the source's thread: copy the packet out of the connection's memory."""
        if self._source.connections != self._connection:
            self._box.close()  # reconnected: the audio of this recording ends here
            return
        copy = av.Packet(bytes(packet))
        copy.pts, copy.dts, copy.duration, copy.time_base = packet.pts, packet.dts, packet.duration, packet.time_base
        self._box.put((copy, arrived))

    def packets(self) -> Iterator[av.Packet]:
        last = -1
        stream = self.streams[0]
        while True:
            item = self._box.get(timeout=1.0)
            if item is None:
                return
            packet, arrived = item
            if packet.time_base is None:
                continue
            if packet.pts is not None and self._shift is not None:
                seconds = float(packet.pts * packet.time_base) + self._shift - self._t0
            else:
                seconds = arrived - self._start_live - self._t0
            if seconds < 0:
                continue
            if self.end is not None and seconds >= self.end:
                return
            pts = round(seconds / packet.time_base)
            if pts <= last:
                continue
            last = pts
            packet.pts = packet.dts = pts
            packet.stream = stream
            yield packet

    def end_at(self, seconds: float) -> None:
        super().end_at(seconds)
        self._source.on_audio = None
        self._box.close()  # what has arrived is all there will be

    def close(self) -> None:
        self._source.on_audio = None
        self._box.close()
        try:
            self._holder.close()
        except (av.FFmpegError, OSError, ValueError):
            pass


class _TapSink(Mp4Sink):
    """:class:`Mp4Sink` whose audio comes from an :class:`_AudioFeed` instead of a file.

    It fills in the same fields ``Mp4Sink`` sets up for ``audio_from`` (streams to copy,
    a packet iterator, the per-stream maps), so the muxing, interleaving and closing
    are Mp4Sink's own.
    """

    def attach_audio(self, feed: _AudioFeed) -> None:
        if self.frames_written or not feed.streams:
            feed.close()
            return
        self._audio_in = feed  # closed through _close_audio(), like a container
        self._audio_streams = feed.streams
        self._audio_packets = feed.packets()
        self._audio_next = None
        self._audio_map = {}
        self._audio_last = {}


class LiveRecorder:
    """Record :class:`FrameResult` images to ``path`` in a thread of its own.

    :meth:`put` from the session's sink thread; :meth:`finish` from the controlling
    thread (it flushes and moves the MP4 into place).
    """

    def __init__(self, path: Path, source: LiveSource, *, crf: int = 23, preset: str = "veryfast") -> None:
        self.path = check_recording_path(Path(path))
        self.source = source
        self.frames = 0
        self._crf, self._preset = crf, preset
        self._sink: _TapSink | None = None
        self._feed: _AudioFeed | None = None
        self._t0 = 0.0
        self._last = 0.0  # recording seconds of the last frame written
        self._worker: DropWorker[FrameResult] = DropWorker(self._write, _QUEUE, "camvideo-record")

    def start(self) -> LiveRecorder:
        self._worker.start()
        return self

    def put(self, result: FrameResult) -> None:
        self._worker.put(result)

    @property
    def dropped(self) -> int:
        return self._worker.dropped

    @property
    def threads(self) -> list:
        return [self._worker.thread]

    def _write(self, result: FrameResult) -> None:
        frame = result.frame
        if self._sink is None:
            self._t0 = frame.time
            height, width = result.image.shape[:2]
            info = VideoInfo(width=width, height=height, fps=self.source.info.fps, time_base=LIVE_TIME_BASE,
                             name=self.path.name)  # fmt: skip
            self._sink = _TapSink(self.path, info, crf=self._crf, preset=self._preset)
            self._feed = self._audio(frame)
            if self._feed is not None:
                self._sink.attach_audio(self._feed)
        seconds = frame.time - self._t0
        self._sink.write(result.image, round(seconds / LIVE_TIME_BASE), seconds)
        self._last = seconds
        self.frames += 1

    def _audio(self, first: Frame) -> _AudioFeed | None:
        source = self.source
        try:
            if isinstance(source, PacedFileSource) and source.info.has_audio:
                return _FileAudio(source, first)
            if isinstance(source, StreamSource) and source.audio_stream is not None:
                return _StreamAudio(source, first)
        except (av.FFmpegError, OSError) as err:
            log.warning("%s: recording without audio (%s)", self.path, err)
        return None

    def finish(self) -> Path:
        """Write what is queued, finish the MP4 and return its path.

        Raises:
            OutputError: nothing was recorded, or the file could not be written.
        """
        self._worker.close(timeout=30.0)
        sink = self._sink
        if isinstance(self.source, StreamSource):
            self.source.on_audio = None
        if self._worker.error is not None:
            if sink is not None:
                sink.abort()
            err = self._worker.error
            raise err if isinstance(err, OutputError) else OutputError(f"{self.path}: recording failed ({err})")
        if sink is None:
            raise OutputError(f"{self.path}: no frame was recorded, so no video was made")
        if self._feed is not None:
            # The audio ends with the last frame's duration: close() copies up to there.
            self._feed.end_at(self._last + 1.0 / (self.source.info.fps or 30.0))
        return sink.close()
