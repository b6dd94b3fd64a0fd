"""Where annotated frames go: every output is a :class:`Writer`.

:class:`Mp4Sink` (H.264 with the source's timestamps and audio), :class:`JsonlWriter`
and :class:`MapsWriter` (records beside the video), :class:`ReportWriter` (one PNG
picture of the whole video; matplotlib), :class:`LiveRecorder` (a live session's
overlay). Each writes to a hidden temporary file beside its target and moves it into
place only on success. This package imports neither torch nor the engine.
"""

from .audio import AudioCopier, AudioFeed, FileAudio, fits_container
from .base import Writer, WriterStalled, check_output_folder, close_together, describe_os_error, temporary_beside
from .encoders import ENCODERS, choose_encoder, encoder_available
from .mp4 import CONTAINERS, Mp4Sink, container_format
from .recorder import LiveRecorder, RecordingAudio, check_recording_path
from .records import JsonlWriter, MapsWriter, frame_record
from .report import ReportWriter, heat_centre, report_path

__all__ = [
    "CONTAINERS", "ENCODERS", "AudioCopier", "AudioFeed", "FileAudio", "JsonlWriter", "LiveRecorder", "MapsWriter", "Mp4Sink",
    "RecordingAudio", "ReportWriter", "Writer", "WriterStalled", "check_output_folder", "check_recording_path", "choose_encoder", "close_together", "container_format",
    "describe_os_error", "encoder_available", "fits_container", "frame_record", "heat_centre", "report_path", "temporary_beside",
]  # fmt: skip
