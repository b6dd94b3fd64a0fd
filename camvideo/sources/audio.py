"""A live source's audio for a recording, retimed onto the recording's clock.

A file played live gets its own audio from the recorded position on, following loops
(:class:`PacedFileAudio`); a network stream's audio packets are copied as they arrive
(:class:`StreamAudio`); cameras have none. Packets are copied, never re-encoded. Each
feed is what :class:`~camvideo.sinks.LiveRecorder` takes as its audio: ``streams``,
``packets()``, ``end_at(seconds)`` and ``close()``.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import av

from ..pipeline import DropOldest
from ..types import Frame
from .devices import StreamSource
from .live import LiveSource, PacedFileSource

__all__ = ["LiveAudio", "PacedFileAudio", "StreamAudio", "recording_audio"]

log = logging.getLogger(__name__)


class LiveAudio:
    """Audio packets retimed onto a recording's clock (an ``AudioFeed`` for the writer)."""

    streams: list[av.AudioStream]
    end: float | None = None  # recording seconds after which no packet is given (set at the end)

    def packets(self) -> Iterator[av.Packet]:
        raise NotImplementedError

    def end_at(self, seconds: float) -> None:
        """The recording ends at ``seconds``: the rest of the audio is not wanted."""
        self.end = seconds

    def close(self) -> None:
        """Called by the sink when it is done with the audio (and on errors)."""


class PacedFileAudio(LiveAudio):
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
        self.streams = list(self._container.streams.audio)

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


class StreamAudio(LiveAudio):
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
        self._box: DropOldest[tuple[av.Packet, float]] = DropOldest(size=2000)
        stream = source.audio_stream
        assert stream is not None
        self._holder = av.open(io.BytesIO(), mode="w", format="mp4")
        try:  # the writer leaves out a codec MP4 cannot hold (with a warning)
            self.streams = [self._holder.add_stream_from_template(stream)]
        except (av.FFmpegError, ValueError) as err:
            log.warning("%s: its audio cannot be recorded (%s)", source.name, err)
            self.streams = []
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


def recording_audio(source: LiveSource, first: Frame) -> LiveAudio | None:
    """The audio feed for a recording of ``source`` that starts at frame ``first``, or
    None when the source has no audio (a camera) or it cannot be read (logged)."""
    try:
        if isinstance(source, PacedFileSource) and source.info.has_audio:
            return PacedFileAudio(source, first)
        if isinstance(source, StreamSource) and source.audio_stream is not None:
            return StreamAudio(source, first)
    except (av.FFmpegError, OSError) as err:
        log.warning("%s: recording without audio (%s)", source.name, err)
    return None
