"""Audio copied into an output packet for packet, never re-encoded.

An :class:`AudioFeed` is where the packets come from: :class:`FileAudio` demuxes a file
(the source video itself, for ``annotate``); a live source provides its own feed (the
recorder's audio, :mod:`camvideo.sources.audio`). :class:`AudioCopier` puts a feed's
streams into an output container and muxes its packets up to each video frame's time,
so audio and video interleave as they are written and memory stays flat.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from os import PathLike
from pathlib import Path
from typing import Protocol

import av

from ..errors import InputError
from .base import describe_os_error

__all__ = ["AudioCopier", "AudioFeed", "FileAudio", "fits_container"]

log = logging.getLogger(__name__)


class AudioFeed(Protocol):
    """Audio packets for a writer: ``streams`` are the templates of the output's audio
    streams; ``packets()`` yields packets of those streams (``packet.stream`` one of
    them) in their own time bases, in time order; ``close()`` releases the input."""

    streams: list[av.AudioStream]

    def packets(self) -> Iterator[av.Packet]: ...

    def close(self) -> None: ...


def fits_container(stream: av.stream.Stream, format: str = "mp4") -> bool:
    """Whether ``stream`` can be copied unchanged into a ``format`` container (an FFmpeg
    muxer name: ``mp4``, ``mov``, ``matroska``), tried on an in-memory one.

    Audio is never re-encoded, so a codec the container cannot hold (G.711 or WMA in
    MP4, Opus in MOV) is left out with a warning instead of failing the whole video at
    its first frame.
    """
    try:
        with av.open(io.BytesIO(), mode="w", format=format) as probe:
            probe.add_stream_from_template(stream)
            probe.start_encoding()
        return True
    except (av.FFmpegError, ValueError, OSError) as err:
        name = stream.codec_context.name if stream.codec_context else "unknown"
        log.warning("audio stream #%d (%s) cannot go into a %s file unchanged, left out (%s)",
                    stream.index, name, format, describe_os_error(err))  # fmt: skip
        return False


class FileAudio:
    """The audio streams of a file, demuxed lazily by a demuxer of our own."""

    def __init__(self, path: str | PathLike) -> None:
        source = Path(path)
        try:
            self._container = av.open(str(source.absolute()), mode="r", metadata_errors="replace")
        except (av.FFmpegError, OSError) as err:
            raise InputError(f"{source}: cannot read its audio ({describe_os_error(err)})") from err
        self.streams = list(self._container.streams.audio)

    def packets(self) -> Iterator[av.Packet]:
        return self._container.demux(self.streams)

    def close(self) -> None:
        try:
            self._container.close()
        except (av.FFmpegError, OSError):
            pass


class AudioCopier:
    """Copies the streams of a feed that a ``format`` container (FFmpeg muxer name) can
    hold into ``out``, up to a time at each call."""

    def __init__(self, feed: AudioFeed, what: object, format: str = "mp4") -> None:
        self._feed: AudioFeed | None = feed
        self._what = what  # for messages: the output's path
        self.streams = [s for s in feed.streams if fits_container(s, format)]
        self._packets: Iterator[av.Packet] | None = feed.packets() if self.streams else None
        self._next: av.Packet | None = None
        self._map: dict[int, av.stream.Stream] = {}
        self._last: dict[int, int | None] = {}  # last pts per source stream
        if not self.streams:
            self.close()

    @property
    def active(self) -> bool:
        return self._feed is not None

    def add_streams(self, out: av.container.OutputContainer) -> None:
        for source in self.streams:
            self._map[source.index] = out.add_stream_from_template(source)

    def mux_until(self, out: av.container.OutputContainer, seconds: float | None) -> None:
        """Copy packets up to ``seconds`` (all of them for None).

        Reading ahead of the video by at most one packet keeps memory flat and lets
        the muxer interleave audio and video as it goes.
        """
        while self._feed is not None and self._packets is not None:
            packet = self._next
            if packet is None:
                try:
                    packet = next(self._packets)
                except StopIteration:
                    self.close()
                    return
                except (av.FFmpegError, OSError) as err:
                    log.warning("%s: audio stops early, its source is damaged (%s)", self._what, describe_os_error(err))
                    self.close()
                    return
                if packet.size == 0:  # demux()'s end-of-stream marker, not data
                    continue
                if packet.stream.index not in self._map:
                    continue  # a stream left out (the container cannot hold it)
                self._next = packet
            stamp = packet.pts if packet.pts is not None else packet.dts
            if seconds is not None and stamp is not None and packet.time_base is not None:
                if stamp * packet.time_base > seconds:
                    return
            self._next = None
            index = packet.stream.index
            # MP4 stores a duration per sample and ends the track's edit at the last
            # one's end: a packet without a duration (NUT, some Matroska) would be cut
            # off at the end. Assume it lasts as long as the gap before it.
            previous = self._last.get(index)
            if not packet.duration and stamp is not None and previous is not None and stamp > previous:
                packet.duration = stamp - previous
            self._last[index] = stamp
            packet.stream = self._map[index]
            out.mux(packet)

    def close(self) -> None:
        if self._feed is not None:
            feed, self._feed = self._feed, None
            feed.close()
