"""The wire format of ``camvideo serve``: binary frames both ways, small JSON messages for the rest.

Server → client, binary: one annotated frame, a 32-byte header then the JPEG::

    b"CVF1" | seq (uint32) | captured (float64, ms since the epoch, the server's clock)
           | sent (float64, ms, the server's clock) | stamp (float64: the upload's own stamp
             echoed for a frame from the viewer's camera, else 0) | JPEG bytes

The client acknowledges each one (``{"type": "ack", "seq": N}``); the server sends nothing
more to that client until then, and then only the newest frame.

Client → server, binary (``serve browser``): one camera frame, ``b"CVU1" | stamp (float64,
the client's ms) | JPEG``. Text: JSON objects with a ``type``: ``ack``, ``options`` (any of
:data:`OPTION_FIELDS`), ``pause``, ``resume``, ``step``, ``record`` (``on``: true/false),
``ping`` (``t``: the client's ms; answered by ``pong`` with the server's clock, to measure
latency across two clocks). The server sends ``hello``, ``options``, ``status``, ``recorded``,
``uploaded``, ``pong`` and ``error`` messages.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

from ..options import COLORMAP_NAMES, METHOD_CHOICES

__all__ = [
    "FRAME_HEADER", "MAX_TEXT_BYTES", "MAX_UPLOAD_BYTES", "OPTION_FIELDS", "UPLOAD_HEADER", "FrameHeader",
    "ProtocolError", "pack_frame", "parse_control", "unpack_frame", "unpack_upload",
]  # fmt: skip

FRAME_MAGIC, UPLOAD_MAGIC = b"CVF1", b"CVU1"
FRAME_HEADER = struct.Struct("<4sIddd")
UPLOAD_HEADER = struct.Struct("<4sd")
#: A control message is a few dozen bytes; a class name is short.
MAX_TEXT_BYTES = 4096
#: One uploaded camera frame (a 1080p JPEG is ~300 kB).
MAX_UPLOAD_BYTES = 4 * 1024 * 1024
#: An uploaded frame's largest side, in pixels.
MAX_UPLOAD_SIDE = 4096


class ProtocolError(ValueError):
    """A message the server cannot use; the text is sent back as an ``error`` message."""


@dataclass(frozen=True)
class FrameHeader:
    seq: int
    captured_ms: float
    sent_ms: float
    stamp: float


def pack_frame(seq: int, captured_ms: float, sent_ms: float, stamp: float, jpeg: bytes) -> bytes:
    return FRAME_HEADER.pack(FRAME_MAGIC, seq & 0xFFFFFFFF, captured_ms, sent_ms, stamp) + jpeg


def unpack_frame(data: bytes) -> tuple[FrameHeader, bytes]:
    """A binary frame message → its header and its JPEG bytes."""
    if len(data) < FRAME_HEADER.size or data[:4] != FRAME_MAGIC:
        raise ProtocolError("not a frame message")
    magic, seq, captured, sent, stamp = FRAME_HEADER.unpack_from(data)
    return FrameHeader(seq, captured, sent, stamp), data[FRAME_HEADER.size :]


def unpack_upload(data: bytes, limit: int = MAX_UPLOAD_BYTES) -> tuple[float, bytes]:
    """A binary upload → (the client's stamp, JPEG bytes)."""
    if len(data) > limit:
        raise ProtocolError(f"uploaded frame too large: {len(data)} bytes, at most {limit}")
    if len(data) <= UPLOAD_HEADER.size or data[:4] != UPLOAD_MAGIC:
        raise ProtocolError("binary messages must be camera frames: b'CVU1', a float64 stamp, then a JPEG")
    _, stamp = UPLOAD_HEADER.unpack_from(data)
    if not math.isfinite(stamp):
        raise ProtocolError("the upload's stamp is not a finite number")
    return stamp, data[UPLOAD_HEADER.size :]


def _unit(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError("a number from 0 to 1")
    return float(value)


def _smooth(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 60:
        raise ValueError("seconds from 0 to 60")
    return float(value)


def _every(value: Any) -> int:
    if value == "auto":
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 600:
        raise ValueError("a whole number from 0 (auto) to 600, or 'auto'")
    return value


def _choice(names: tuple[str, ...]):
    def check(value: Any) -> str:
        if value not in names:
            raise ValueError(f"one of {', '.join(names)}")
        return value

    return check


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _target(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise ValueError("top1, topK, a class index or a class name")
    return value.strip()


#: The LiveOptions fields a viewer may change, each with its check.
OPTION_FIELDS = {
    "method": _choice(METHOD_CHOICES),
    "colormap": _choice(COLORMAP_NAMES),
    "alpha": _unit,
    "min_score": _unit,
    "threshold": _unit,
    "smooth": _smooth,
    "every": _every,
    "target": _target,
    "boxes": _flag,
    "labels": _flag,
    "side_by_side": _flag,
}
_SIMPLE = {"pause", "resume", "step", "ack", "ping", "record"}


def parse_control(text: str, limit: int = MAX_TEXT_BYTES) -> dict[str, Any]:
    """A text message → a checked dict with ``type`` (for ``options``: the checked values
    under ``changes``). Raises :class:`ProtocolError` with a message for the client."""
    if len(text.encode()) > limit:
        raise ProtocolError(f"control message too large: at most {limit} bytes")
    try:
        message = json.loads(text)
    except ValueError:
        raise ProtocolError("control messages are JSON objects") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError('control messages are JSON objects with a "type"')
    kind = message["type"]
    if kind == "options":
        changes = {}
        for name, value in message.items():
            if name == "type":
                continue
            check = OPTION_FIELDS.get(name)
            if check is None:
                raise ProtocolError(f"unknown option {name!r}; known: {', '.join(OPTION_FIELDS)}")
            try:
                changes[name] = check(value)
            except ValueError as err:
                raise ProtocolError(f"{name}: {err}") from None
        return {"type": kind, "changes": changes}
    if kind not in _SIMPLE:
        raise ProtocolError(f"unknown message type {kind!r}")
    if kind == "ack" and not (isinstance(message.get("seq"), int) and not isinstance(message["seq"], bool)):
        raise ProtocolError('an ack needs "seq", the frame number')
    if kind == "record" and not isinstance(message.get("on"), bool):
        raise ProtocolError('record needs "on": true or false')
    if kind == "ping" and not (isinstance(message.get("t"), (int, float)) and math.isfinite(message["t"])):
        raise ProtocolError('ping needs "t": the client\'s clock in ms')
    return message


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's frame header, read before decoding it (a small file
    can claim a huge picture). Raises :class:`ProtocolError` for what is not a JPEG."""
    if data[:2] != b"\xff\xd8":
        raise ProtocolError("the uploaded frame is not a JPEG")
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            raise ProtocolError("the uploaded JPEG is damaged")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame
            height, width = struct.unpack_from(">HH", data, i + 5)
            return width, height
        i += 2 + length
    raise ProtocolError("the uploaded JPEG has no frame header")
