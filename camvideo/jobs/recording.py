"""A live session's recording: the recorder writer behind a drop-when-full worker thread."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from ..errors import OutputError
from ..pipeline import DropWorker
from ..sinks import LiveRecorder
from ..sources import LiveSource, recording_audio
from ..types import FrameResult

__all__ = ["RECORDING_QUEUE", "Recording"]

#: Frames (3 s at 30 fps) a recording's encoder may fall behind before frames are dropped.
RECORDING_QUEUE = 90


class Recording:
    """A :class:`~camvideo.sinks.LiveRecorder` fed by a drop-when-full worker thread, so
    a recording that falls behind drops frames (counted) rather than stall the display."""

    def __init__(self, path: Path, source: LiveSource, *, crf: int, preset: str) -> None:
        self.writer = LiveRecorder(path, source.info.fps, audio=partial(recording_audio, source), crf=crf,
                                   preset=preset)  # fmt: skip
        self.path = self.writer.path
        self._worker: DropWorker[FrameResult] = DropWorker(self.writer.write, RECORDING_QUEUE, "camvideo-record")
        self._worker.start()

    def put(self, result: FrameResult) -> None:
        self._worker.put(result)

    @property
    def frames(self) -> int:
        return self.writer.frames_written

    @property
    def dropped(self) -> int:
        return self._worker.dropped

    @property
    def threads(self) -> list:
        return [self._worker.thread]

    def finish(self) -> Path:
        """Write what is queued, finish the MP4 and return its path.

        Raises:
            OutputError: nothing was recorded, or the file could not be written.
        """
        self._worker.close(timeout=30.0)
        err = self._worker.error
        if err is not None:
            self.writer.abort()
            raise err if isinstance(err, OutputError) else OutputError(f"{self.path}: recording failed ({err})")
        return self.writer.close()
