"""Machine-readable results beside the video: per-frame JSONL and raw maps (NPZ).

Both are written to a temporary file in the target's folder and renamed into place on
success, like the MP4: an interrupted or failed run never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np

from ..errors import OutputError
from ..types import FrameResult
from .base import Writer, describe_os_error, temporary_beside

__all__ = ["JsonlWriter", "MapsWriter", "frame_record"]


def frame_record(result: FrameResult, class_names: Sequence[str]) -> dict:
    """The JSONL record of one frame.

    - ``frame``: the frame's index; ``time``: its presentation time in seconds (named
      ``pts`` in files written before; camvideo reads none of these files back);
    - ``class``, ``name``, ``score``: the class the overlay shows (its map, box and label)
      and its probability in this frame;
    - ``smoothed``: true when that class is the smoother's choice (``--smooth``: its
      hysteresis holds a class until another beats it), which can differ from the model's
      own top-1; false when it is the model's class for the target as it is;
    - ``top1``: the model's raw top-1 for the frame (``class``, ``name``, ``score``);
    - ``box``: [x0, y0, x1, y1] in frame pixels (x1/y1 exclusive), or null;
    - ``top5``: the model's five most probable classes;
    - ``targets``: with a top-k target, every class explained.
    """
    top1 = result.top5[0] if result.top5 else (result.class_index, result.score)
    record = {
        "frame": result.frame.index,
        "time": round(result.frame.time, 6),
        "class": result.class_index,
        "name": class_names[result.class_index],
        "score": round(result.score, 6),
        "smoothed": result.smoothed,
        "top1": {"class": top1[0], "name": class_names[top1[0]], "score": round(top1[1], 6)},
        "box": list(result.box) if result.box is not None else None,
        "top5": [{"class": c, "name": class_names[c], "score": round(p, 6)} for c, p in result.top5],
    }
    if len(result.classes) > 1:
        record["targets"] = [
            {"class": c, "name": class_names[c], "score": round(s, 6)} for c, s in zip(result.classes, result.scores)
        ]
    return record


def _failed(writer: Writer, what: str, err: OSError) -> None:
    """Raise the one-line OutputError; the writer's protocol removes its temporary file."""
    raise OutputError(f"{writer.path}: {what} ({describe_os_error(err)}); nothing was saved") from err


class JsonlWriter(Writer):
    """One JSON record per frame, in frame order (see :func:`frame_record`)."""

    def __init__(self, path: str | os.PathLike, class_names: Sequence[str]) -> None:
        super().__init__(path)
        self.class_names = list(class_names)
        self._file: IO[str] | None = None
        self.open()

    def _open(self) -> None:
        self._temp = temporary_beside(self.path, ".jsonl")
        self._file = open(self._temp, "w", encoding="utf-8")

    def _write(self, result: FrameResult) -> None:
        assert self._file is not None
        try:
            self._file.write(json.dumps(frame_record(result, self.class_names)) + "\n")
        except OSError as err:  # disk full, quota, I/O error: one line, nothing left behind
            _failed(self, "cannot write", err)

    def _finish(self) -> Path:
        assert self._file is not None
        try:
            file, self._file = self._file, None
            file.close()
            os.replace(self._temp, self.path)
        except OSError as err:
            _failed(self, "cannot finish", err)
        return self.path

    def _unlink_partial(self) -> None:
        self._temp.unlink(missing_ok=True)

    def _discard(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()  # flushes: may fail again on a full disk
            except OSError:
                pass
        self._temp.unlink(missing_ok=True)


class MapsWriter(Writer):
    """Raw maps at feature resolution (float16), their classes and frame times, as NPZ.

    Arrays: ``maps`` (N, h, w) or (N, k, h, w) for top-k targets, ``classes`` (N,) or
    (N, k), ``scores``, ``frames`` (indices), ``time`` (seconds; ``pts`` in files written
    before it had that name). Maps are appended to a
    temporary file as they come and packed into the NPZ at close, so memory stays flat
    however long the video.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path)
        self._spool: IO[bytes] | None = None
        self._shape: tuple[int, ...] | None = None
        self._classes: list[list[int]] = []
        self._scores: list[list[float]] = []
        self._frames: list[int] = []
        self._times: list[float] = []
        self.open()

    def _open(self) -> None:
        self._spool_path = temporary_beside(self.path, ".maps")
        self._spool = open(self._spool_path, "wb")

    def _write(self, result: FrameResult) -> None:
        if result.raw_map is None:
            raise ValueError("MapsWriter needs results with raw maps (FrameAnnotator(keep_maps=True))")
        assert self._spool is not None
        maps = np.ascontiguousarray(result.raw_map, dtype=np.float16)
        if self._shape is None:
            self._shape = maps.shape
        elif maps.shape != self._shape:
            raise ValueError(f"map shape changed mid-video: {self._shape} -> {maps.shape}")
        try:
            self._spool.write(maps.tobytes())
        except OSError as err:
            _failed(self, "cannot write", err)
        self._classes.append(result.classes)
        self._scores.append(result.scores)
        self._frames.append(result.frame.index)
        self._times.append(result.frame.time)

    def _finish(self) -> Path:
        assert self._spool is not None
        spool, self._spool = self._spool, None
        try:
            spool.close()
        except OSError as err:
            _failed(self, "cannot finish", err)
        n = len(self._frames)
        shape = (n, *(self._shape or (0, 0, 0)))
        maps = np.memmap(self._spool_path, np.float16, "r", shape=shape) if n else np.zeros(shape, np.float16)
        classes = np.asarray(self._classes, dtype=np.int64).reshape(n, -1)
        scores = np.asarray(self._scores, dtype=np.float32).reshape(n, -1)
        if classes.shape[1] == 1:  # one target per frame: (N, h, w), (N,)
            maps, classes, scores = maps[:, 0], classes[:, 0], scores[:, 0]
        temp = temporary_beside(self.path, ".npz")
        try:
            with open(temp, "wb") as handle:  # np.savez streams the memmap in chunks
                np.savez(handle, maps=maps, classes=classes, scores=scores,
                         frames=np.asarray(self._frames, dtype=np.int64), time=np.asarray(self._times, dtype=np.float64))  # fmt: skip
            os.replace(temp, self.path)
        except OSError as err:
            _failed(self, "cannot finish", err)
        finally:
            del maps
            temp.unlink(missing_ok=True)
            self._spool_path.unlink(missing_ok=True)
        return self.path

    def _unlink_partial(self) -> None:
        self._spool_path.unlink(missing_ok=True)

    def _discard(self) -> None:
        if self._spool is not None:
            spool, self._spool = self._spool, None
            try:
                spool.close()
            except OSError:
                pass
        self._spool_path.unlink(missing_ok=True)
