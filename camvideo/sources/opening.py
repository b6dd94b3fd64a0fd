"""Choosing a live source from what the user typed: a camera, a stream, a file, the sample."""

from __future__ import annotations

import logging
from os import PathLike
from pathlib import Path

from ..errors import InputError
from .devices import CameraSource, StreamSource, list_cameras
from .live import STREAM_SCHEMES, LiveSource, PacedFileSource
from .samples import sample_video

__all__ = ["describe_spec", "open_live_source"]

log = logging.getLogger(__name__)


def describe_spec(spec: str) -> str:
    """What a SOURCE argument names: "camera", "stream", "file" or "sample"."""
    text = spec.strip()
    if text.lower() == "sample":
        return "sample"
    bare = text.removeprefix("av:")
    if bare.isdigit() or bare.startswith("/dev/video") or (text.startswith("av:") and bare):
        return "camera"
    if "://" in text and text.split("://", 1)[0].lower() in STREAM_SCHEMES:
        return "stream"
    return "file"


def open_live_source(
    spec: str | PathLike | None,
    *,
    loop: bool = True,
    reconnect_timeout: float | None = None,
) -> LiveSource:
    """Open what a SOURCE argument names.

    ``None``: the first camera that opens, else the bundled sample video (looped, so
    there is always something to show). ``"0"``, ``"1"``, ``/dev/video2``: a camera
    (OpenCV); ``av:0`` / ``av:/dev/video0`` / ``av:video=NAME``: a camera through PyAV.
    ``rtsp://`` ``http(s)://`` ``udp://`` ``tcp://`` ...: a stream. ``sample``: the
    bundled sample. Anything else: a video file, played in real time.

    Raises:
        InputError: the camera is missing or busy, the stream cannot be reached, the
            file is not a video; the message says which.
    """
    if spec is None:
        for camera in list_cameras():
            try:
                return CameraSource(camera.spec, reconnect_timeout=reconnect_timeout)
            except InputError as err:
                log.info("%s", err)
        return PacedFileSource(sample_video(), loop=True)
    text = str(spec).strip()
    kind = describe_spec(text)
    if kind == "sample":
        return PacedFileSource(sample_video(), loop=loop)
    if kind == "camera":
        backend = "av" if text.startswith("av:") else "opencv"
        return CameraSource(text.removeprefix("av:"), backend=backend, reconnect_timeout=reconnect_timeout)
    if kind == "stream":
        return StreamSource(text, reconnect_timeout=reconnect_timeout)
    path = Path(text)
    if not path.exists() and "://" in text:
        raise InputError(f"{text}: unknown stream protocol; use one of {', '.join(STREAM_SCHEMES)}")
    if not path.exists():
        raise InputError(f"{text}: not a camera index, device, stream URL or existing video file")
    return PacedFileSource(path, loop=loop)
