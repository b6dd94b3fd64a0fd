"""Where frames come from: video files, cameras, streams, files played in real time.

Every source yields :class:`~camvideo.types.Frame` objects (upright uint8 RGB with
their timestamps). :class:`FileSource` decodes as fast as it can (``annotate``); the
live sources (:func:`open_live_source`) deliver in real time, with reconnects.
"""

from .audio import LiveAudio, PacedFileAudio, StreamAudio, recording_audio
from .devices import CameraInfo, CameraSource, StreamSource, list_cameras
from .file import FileSource
from .finding import VIDEO_EXTENSIONS, find_videos
from .live import LIVE_TIME_BASE, STREAM_SCHEMES, LiveSource, PacedFileSource
from .opening import describe_spec, open_live_source
from .samples import DEFAULT_SAMPLE, sample_dir, sample_video

__all__ = [
    "DEFAULT_SAMPLE", "LIVE_TIME_BASE", "STREAM_SCHEMES", "VIDEO_EXTENSIONS", "CameraInfo", "CameraSource",
    "FileSource", "LiveAudio", "LiveSource", "PacedFileAudio", "PacedFileSource", "StreamAudio", "StreamSource",
    "describe_spec", "find_videos", "list_cameras", "open_live_source", "recording_audio", "sample_dir",
    "sample_video",
]  # fmt: skip
