"""Hardware decoding (NVDEC through PyAV): why an attempt was not used, in one line.

:class:`~camvideo.sources.FileSource` tries the device first and falls back to software;
these helpers tell it whether the device really decoded and say why not when it did not.
"""

from __future__ import annotations

from pathlib import Path

import av

from ..errors import InputError

__all__ = ["hardware_failure", "hardware_unused", "one_line"]


def one_line(err: BaseException) -> str:
    """PyAV's message for ``err`` without the file name it repeats, on one line."""
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return " ".join(str(text).split())


def hardware_failure(err: BaseException, path: Path) -> str:
    """Why a hardware-decoding attempt failed, on one line (without the file name)."""
    cause = err.__cause__ if isinstance(err, InputError) and err.__cause__ is not None else err
    text = one_line(cause)
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def hardware_unused(context: av.codec.context.CodecContext, hwaccel: str, codec: str) -> str | None:
    """None when the first frame came from ``hwaccel``'s device, else why not.

    PyAV attaches the device only to codecs that have a config for it, and
    FFmpeg's get_format falls back to a software pixel format when the device
    cannot decode the stream (an unsupported profile, 4:4:4, a size too large);
    after the first frame the codec context's pixel format says which happened.
    """
    formats = [c.format.name for c in context.codec.hardware_configs
               if c.device_type.name == hwaccel and c.is_supported and c.format is not None]  # fmt: skip
    if not formats or not context.is_hwaccel:
        return f"no {hwaccel} decoder for {codec}"
    if context.pix_fmt not in formats:
        return f"the {hwaccel} decoder cannot decode this {codec} stream"
    return None
