"""Segments back into one video, one JSONL and one NPZ, without re-encoding.

The parts are MP4s (their clock is the source's time base, exactly); the joined video is
the container its name asks for, as :class:`~camvideo.sinks.Mp4Sink` would write it.

The MP4: every segment was encoded with the same encoder and settings at the same size,
so their H.264 parameter sets (the ``avcC`` extradata) are the same, and each starts with
an IDR frame. Their packets are copied one after the other into a new MP4 (stream copy:
pts and dts as encoded, which are the source's pts), and the source's audio is copied in
once, packet for packet, interleaved by time, as :class:`~camvideo.sinks.Mp4Sink` does.

The records: the segments' JSONL lines and NPZ arrays are concatenated in segment order,
which is frame order. Every output goes to a hidden temporary file beside its target
and is renamed into place only when all of them are complete.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import OutputError
from ..sinks import AudioCopier, FileAudio, container_format, describe_os_error, temporary_beside
from ..sinks.mp4 import movie_timescale

log = logging.getLogger(__name__)


def _packets(parts: Sequence[Path]) -> Iterator[av.Packet]:
    """The video packets of each part in turn (the part stays open while it is read)."""
    for part in parts:
        with av.open(str(part)) as container:
            for packet in container.demux(container.streams.video[0]):
                if packet.size:
                    yield packet


def join_video(parts: Sequence[Path], output: Path, time_base: Fraction, audio_from: Path | None) -> tuple[int, Path]:
    """Remux the parts' video and ``audio_from``'s audio into a temporary file beside ``output``.

    Returns the number of frames and the temporary file (see :func:`move_into_place`).

    Raises OutputError when the parts cannot be joined without re-encoding (their
    encoders differed) or the file cannot be written; nothing is left at ``output`` then.
    """
    extradata = set()
    for part in parts:
        with av.open(str(part)) as container:
            extradata.add(bytes(container.streams.video[0].codec_context.extradata or b""))
    if len(extradata) != 1:
        raise OutputError(f"{output}: the segments were encoded differently (mixed encoders?) and cannot be "
                          "joined without re-encoding; run with --segment-seconds 0")  # fmt: skip
    muxer = container_format(output)  # .mp4, .mov or .mkv, as Mp4Sink writes it
    temp = temporary_beside(output, output.suffix.lower())
    frames = 0
    audio = AudioCopier(FileAudio(audio_from), output, muxer) if audio_from is not None else None
    try:
        with av.open(str(parts[0])) as first:
            template = first.streams.video[0]
            rates = [s.codec_context.sample_rate for s in audio.streams] if audio is not None else []
            options = {"movflags": "+faststart", "movie_timescale": str(movie_timescale(time_base, rates))}
            if muxer == "matroska":
                options = {}  # options of the MP4/MOV muxer only
            with av.open(str(temp), mode="w", format=muxer, container_options=options) as out:
                video = out.add_stream_from_template(template)
                video.time_base = time_base  # the track's clock as Mp4Sink chose it
                if audio is not None:
                    audio.add_streams(out)
                last_dts = None
                for packet in _packets(parts):
                    if audio is not None and packet.pts is not None:
                        audio.mux_until(out, float(packet.pts * packet.time_base))
                    # Each part's encoder started its dts a few frames before its first pts;
                    # they stay after the previous part's last dts at a constant frame rate.
                    # A variable one could make them collide: nudge, keeping dts <= pts.
                    if last_dts is not None and packet.dts is not None and packet.dts <= last_dts:
                        packet.dts = last_dts + 1
                    last_dts = packet.dts
                    packet.stream = video
                    out.mux(packet)
                    frames += 1
                if audio is not None:
                    audio.mux_until(out, None)
    except (av.FFmpegError, OSError) as err:
        temp.unlink(missing_ok=True)
        raise OutputError(f"{output}: cannot join the segments ({describe_os_error(err)}); nothing was saved") from err
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    finally:
        if audio is not None:
            audio.close()
    return frames, temp


def join_jsonl(parts: Sequence[Path], output: Path) -> Path:
    """Concatenate the parts' lines into a temporary file beside ``output``; returns it."""
    temp = temporary_beside(output, ".jsonl")
    try:
        with open(temp, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, out)
    except BaseException as err:
        temp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise OutputError(f"{output}: cannot write ({describe_os_error(err)}); nothing was saved") from err
        raise
    return temp


def join_maps(parts: Sequence[Path], output: Path) -> Path:
    """Concatenate the parts' NPZ arrays (maps, classes, scores, frames, time) along frames."""
    arrays: dict[str, list[np.ndarray]] = {}
    for part in parts:
        with np.load(part) as data:
            for key in data.files:
                arrays.setdefault(key, []).append(data[key])
    temp = temporary_beside(output, ".npz")
    try:
        with open(temp, "wb") as handle:
            np.savez(handle, **{key: np.concatenate(values) for key, values in arrays.items()})
    except BaseException as err:
        temp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise OutputError(f"{output}: cannot write ({describe_os_error(err)}); nothing was saved") from err
        raise
    return temp


def move_into_place(temps: Sequence[tuple[Path, Path]]) -> None:
    """Rename each finished temporary file over its target (all of them are complete)."""
    for temp, target in temps:
        os.replace(temp, target)
