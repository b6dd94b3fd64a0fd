"""``camvideo serve``: the live session in a web browser.

* :mod:`.server`: :class:`Server`, the aiohttp app (page, WebSocket, MJPEG, downloads);
* :mod:`.hub`: :class:`FrameHub`, the session's frames JPEG-encoded once for every viewer;
* :mod:`.protocol`: the wire format (frame header, uploads, control messages, limits);
* :mod:`.browser`: :class:`BrowserSource`, the viewer's own camera as a live source;
* :mod:`.running`: serving until Ctrl-C, or in a thread;
* ``static/``: the page (plain HTML and JavaScript, no build step, nothing from the internet).

Needs aiohttp: ``pip install aiohttp`` (from the clone: ``pip install ".[serve]"``).
"""

from .browser import BrowserSource
from .hub import EncodedFrame, FrameHub, encode_jpeg
from .protocol import FrameHeader, ProtocolError, pack_frame, parse_control, unpack_frame
from .running import ServerThread, serve_until_stopped
from .server import ServeConfig, Server, is_loopback, urls_to_open

__all__ = [
    "BrowserSource", "EncodedFrame", "FrameHeader", "FrameHub", "ProtocolError", "ServeConfig", "Server",
    "ServerThread", "encode_jpeg", "is_loopback", "pack_frame", "parse_control", "serve_until_stopped",
    "unpack_frame", "urls_to_open",
]  # fmt: skip
