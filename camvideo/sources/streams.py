"""What is checked before and after FFmpeg opens a video file, and which of its streams is the video.

:func:`check_video_file` gives the common mistakes (no such file, a folder, a pipe, an
empty file) a clearer message than FFmpeg's; :func:`index_past_end` tells a truncated file;
:func:`video_stream` picks the stream that
:class:`~camvideo.sources.FileSource` decodes and that the Ray planner scans, so both
always mean the same stream.
"""

from __future__ import annotations

import stat
from os import PathLike
from pathlib import Path

import av

from ..errors import InputError
from .hwdecode import one_line

__all__ = ["check_video_file", "index_past_end", "video_stream"]

# Demuxers/decoders that happily "decode" plain text as ANSI art: a .txt or .nfo file
# would otherwise open as a 640x400 video. Nobody means to explain those.
_TEXT_FORMATS = frozenset({"tty", "bin", "xbin", "adf", "idf"})
_TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})


def check_video_file(path: Path) -> None:
    """Raise :class:`~camvideo.errors.InputError` unless ``path`` is a non-empty regular file."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a video file")
    try:
        info = path.stat()
    except OSError as err:
        raise InputError(f"{path}: cannot be read ({one_line(err)})") from err
    if not stat.S_ISREG(info.st_mode):
        # A pipe or a device: FFmpeg would wait on it forever (a FIFO with no writer)
        # or read it endlessly (/dev/zero), and the audio could not be read twice.
        raise InputError(f"{path}: not a regular file (a pipe, socket or device); give a video file")
    if info.st_size == 0:
        raise InputError(f"{path}: file is empty (0 bytes)")


def video_stream(container: av.container.InputContainer, path: str | PathLike) -> av.VideoStream:
    """The stream camvideo decodes: the first video stream that is not cover art.

    Cover art in music files is a one-frame "video" stream: not a video. Raises
    :class:`~camvideo.errors.InputError` (naming ``path``) when there is no other, when
    this FFmpeg has no decoder for it, or when the "video" is a text file's ANSI art.
    """
    if container.format.name in _TEXT_FORMATS:
        raise InputError(f"{path}: is a text file, not a video")
    streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not streams:
        kind = "audio only" if container.streams.audio else "no streams FFmpeg can use"
        raise InputError(f"{path}: has no video stream ({kind})")
    stream = streams[0]
    if stream.codec_context is None:
        raise InputError(f"{path}: no decoder for its video codec in this FFmpeg build")
    if stream.codec_context.name in _TEXT_CODECS:
        raise InputError(f"{path}: is a text file, not a video")
    return stream


def index_past_end(stream: av.VideoStream, path: Path) -> bool:
    """Whether the container's index points past the end of the file (truncated).

    A cut-off MP4 with its index first ends quietly at EOF, with no error to notice;
    this is how we know the missing frames are lost rather than never there.
    """
    try:
        entries = stream.index_entries
        tail = [entries[i] for i in range(max(0, len(entries) - 16), len(entries))]
        return any(e.pos >= 0 and e.pos + e.size > path.stat().st_size for e in tail)
    except (AttributeError, OSError, av.FFmpegError):
        return False
