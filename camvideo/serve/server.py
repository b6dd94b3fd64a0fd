"""The web server of ``camvideo serve``: one page, one WebSocket per viewer, an MJPEG stream.

Every viewer drives the same :class:`~camvideo.jobs.LiveSession` (the desktop app's), so
they all see one stream and one set of controls. aiohttp serves HTTP and WebSockets in one
dependency; everything blocking (the session's calls, JPEG decoding) runs in threads.

Safety: a token is required whenever the server listens beyond the loopback interface (or
one is given); without a token, only loopback host names are answered, so another web page
cannot reach the server through DNS rebinding. A WebSocket's Origin must be this server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import ipaddress
import json
import logging
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cv2
import numpy as np
from aiohttp import WSMsgType, web

from ..errors import CamvideoError, ModelError
from ..jobs import LiveSession, target_of
from ..options import COLORMAP_NAMES, METHOD_CHOICES
from .browser import BrowserSource
from .hub import FrameHub
from .protocol import (
    MAX_TEXT_BYTES,
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_SIDE,
    OPTION_FIELDS,
    ProtocolError,
    jpeg_size,
    pack_frame,
    parse_control,
    unpack_upload,
)  # fmt: skip

__all__ = ["STATIC", "ServeConfig", "Server", "is_loopback", "urls_to_open"]

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
_STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
_COOKIE = "camvideo_token_{port}"  # per port: two servers on one host keep their own tokens
_MJPEG_SNDBUF = 32 * 1024  # a slow MJPEG reader blocks the writer early, so it gets the newest frame


def is_loopback(host: str) -> bool:
    """True for a host name or address that only this machine can reach."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def urls_to_open(bound: str, port: int, token: str | None) -> list[str]:
    """The URLs to print for a server bound to ``bound``: for every interface (0.0.0.0, ::),
    a bind address nobody can open, this machine's name and 127.0.0.1, as Jupyter does."""
    if bound in ("127.0.0.1", "localhost"):
        hosts = ["localhost"]
    elif bound in ("0.0.0.0", "::", ""):
        hosts = [socket.gethostname(), "127.0.0.1"]
    else:
        hosts = [bound if ":" not in bound else f"[{bound}]"]
    query = f"?token={token}" if token else ""
    return [f"http://{host}:{port}/{query}" for host in hosts]


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None  # required of every request when set (always set beyond loopback)
    jpeg_quality: int = 80
    output_folder: Path = Path(".")  # recordings
    max_upload: int = MAX_UPLOAD_BYTES
    max_text: int = MAX_TEXT_BYTES
    status_interval: float = 0.5  # seconds between status messages
    heartbeat: float = 10.0  # seconds: a viewer that stops answering pings is dropped


class Viewer:
    """One WebSocket client: frames are sent one at a time, each after the previous ack."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.ready = asyncio.Event()
        self.ready.set()
        self.last_seq = 0
        self.sent = 0
        self.lock = asyncio.Lock()

    async def send_json(self, message: dict) -> None:
        async with self.lock:
            if not self.ws.closed:
                await self.ws.send_str(json.dumps(message))

    async def send_bytes(self, data: bytes) -> None:
        async with self.lock:
            if not self.ws.closed:
                await self.ws.send_bytes(data)


class Server:
    """Serve ``session``, a :class:`~camvideo.jobs.LiveSession` not yet started (:meth:`start`
    starts it; :meth:`close` stops it)."""

    def __init__(self, session: LiveSession, config: ServeConfig, *, browser: BrowserSource | None = None) -> None:
        if not is_loopback(config.host) and not config.token:
            raise CamvideoError(f"--host {config.host} reaches beyond this machine: a token is required")
        self.session = session
        self.config = config
        self.browser = browser
        self.hub = FrameHub(session, config.jpeg_quality)
        self.viewers: set[Viewer] = set()
        self.recordings: dict[str, Path] = {}  # name → path, the files this server recorded
        self.last_recording: Path | None = None
        self.url = ""
        self.urls: list[str] = []  # every URL to print: for 0.0.0.0, this machine's name and 127.0.0.1
        self.uploader: Viewer | None = None  # serve browser: the one viewer whose camera feeds the session
        self._runner: web.AppRunner | None = None
        self._status: asyncio.Task | None = None
        self.app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        self.app.add_routes([
            web.get("/", self._index), web.get("/static/{name}", self._static), web.get("/ws", self._ws),
            web.get("/stream.mjpg", self._mjpeg), web.get("/snapshot.png", self._snapshot),
            web.get("/recordings/{name}", self._recording),
        ])  # fmt: skip

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> str:
        """Listen, start the session and the encoder; the URL to open (with the token)."""
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, reuse_address=True)
        try:
            await site.start()
        except OSError as err:
            await self._runner.cleanup()
            raise CamvideoError(
                f"cannot listen on {self.config.host}:{self.config.port} ({err.strerror or err}); choose another --port"
            ) from None
        port = self.config.port = self._runner.addresses[0][1]  # the port picked when 0 was asked for
        self.urls = urls_to_open(self.config.host, port, self.config.token)
        self.url = self.urls[0]
        self.hub.start(asyncio.get_running_loop())
        self.session.start()
        self._status = asyncio.create_task(self._status_loop())
        return self.url

    async def close(self, timeout: float = 30.0) -> Path | None:
        """Stop: viewers are told, a recording in progress is finished (its path returned),
        the session and the encoder stop."""
        path = await self._finish_recording()
        if self._status is not None:
            self._status.cancel()
        await asyncio.gather(*(v.ws.close(code=1001, message=b"server shutting down") for v in list(self.viewers)))
        await asyncio.to_thread(self.session.stop, timeout)
        await asyncio.to_thread(self.hub.stop)
        if self._runner is not None:
            await self._runner.cleanup()
        return path

    # -- security -----------------------------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        token = self.config.token
        cookie = _COOKIE.format(port=self.config.port)
        if token:
            # the page's own assets and socket carry no query: the cookie set below lets them in
            given = (request.query.get("token") or request.headers.get("Authorization", "").removeprefix("token ")
                     or request.cookies.get(cookie, ""))  # fmt: skip
            if not hmac.compare_digest(given.encode(), token.encode()):
                return web.Response(status=401, text="401: this server needs its token (the URL it printed)\n")
        elif not self.host_ok(request.url.host or ""):
            # no token: a loopback server answers loopback names only (DNS rebinding)
            return web.Response(status=403, text="403: use http://localhost:PORT/\n")
        response = await handler(request)
        if token and request.query.get("token") and not response.prepared:
            response.set_cookie(cookie, token, httponly=True, samesite="Strict", path="/")
        return response

    def host_ok(self, host: str) -> bool:
        """Without a token, answer only loopback names and the host this server is bound to."""
        host = host.strip("[]").lower()
        return is_loopback(host) or host == self.config.host.strip("[]").lower()

    def origin_ok(self, request: web.Request) -> bool:
        """A browser's WebSocket must come from this server's own page (same host and port)."""
        origin = request.headers.get("Origin")
        if origin is None:  # not a browser (a script), which could send any Origin anyway
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower()

    # -- pages -------------------------------------------------------------------------------------
    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in _STATIC_FILES:
            raise web.HTTPNotFound()
        return web.FileResponse(STATIC / name, headers={"Content-Type": _STATIC_FILES[name]})

    async def _snapshot(self, request: web.Request) -> web.StreamResponse:
        result = self.hub.last_result
        if result is None:
            return web.Response(status=503, text="no frame yet\n")
        ok, png = await asyncio.to_thread(cv2.imencode, ".png", cv2.cvtColor(result.image, cv2.COLOR_RGB2BGR))
        name = datetime.now().strftime("camvideo-%Y%m%d-%H%M%S.png")
        return web.Response(body=png.tobytes(), content_type="image/png",
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})  # fmt: skip

    async def _recording(self, request: web.Request) -> web.StreamResponse:
        path = self.recordings.get(request.match_info["name"])
        if path is None or not path.exists():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Content-Disposition": f'attachment; filename="{path.name}"'})

    async def _mjpeg(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame",
                                               "Cache-Control": "no-store"})  # fmt: skip
        sock = request.transport.get_extra_info("socket") if request.transport is not None else None
        if sock is not None:  # else the kernel's send buffer holds seconds of frames for a slow reader
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _MJPEG_SNDBUF)
        await response.prepare(request)
        seq = 0
        try:
            while (frame := await self.hub.wait_after(seq)) is not None:
                seq = frame.seq
                head = (f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(frame.jpeg)}\r\n"
                        f"X-Sequence: {seq}\r\n\r\n")  # fmt: skip
                await response.write(head.encode() + frame.jpeg + b"\r\n")
                # a slow reader: wait until the kernel took this frame, then send the newest (latest wins)
                while request.transport is not None and request.transport.get_write_buffer_size() > 0:
                    await asyncio.sleep(0.005)
        except (ConnectionError, asyncio.CancelledError):
            pass
        return response

    # -- the socket -------------------------------------------------------------------------------
    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if not self.origin_ok(request):
            return web.Response(status=403, text="403: WebSocket from another site\n")
        ws = web.WebSocketResponse(max_msg_size=2 * max(self.config.max_upload, self.config.max_text),
                                   heartbeat=self.config.heartbeat, compress=False)  # fmt: skip
        await ws.prepare(request)
        viewer = Viewer(ws)
        self.viewers.add(viewer)
        sender = asyncio.create_task(self._send_frames(viewer))
        try:
            await viewer.send_json(self._hello())
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    await self._on_text(viewer, message.data)
                elif message.type == WSMsgType.BINARY:
                    await self._on_upload(viewer, message.data)
                elif message.type == WSMsgType.ERROR:
                    break
        except ConnectionError:
            pass
        finally:
            sender.cancel()
            self.viewers.discard(viewer)
            if self.uploader is viewer:  # the camera is free: the next viewer to upload takes it
                self.uploader = None
                await self._broadcast({"type": "camera", "free": True})
        return ws

    def _hello(self) -> dict:
        explainer = self.session.explainer
        return {"type": "hello", "server_ms": time.time() * 1000, "browser": self.browser is not None,
                "source": self.session.source.name if self.session.source is not None else "",
                "classes": list(explainer.class_names) if explainer is not None else [],
                "methods": list(METHOD_CHOICES), "colormaps": list(COLORMAP_NAMES),
                "options": self._options(), "status": self._status_message()}  # fmt: skip

    def _options(self) -> dict:
        return {name: getattr(self.session.options, name) for name in OPTION_FIELDS}

    async def _send_frames(self, viewer: Viewer) -> None:
        try:
            while not viewer.ws.closed:
                await viewer.ready.wait()
                frame = await self.hub.wait_after(viewer.last_seq)
                if frame is None:
                    return
                viewer.ready.clear()
                viewer.last_seq, viewer.sent = frame.seq, viewer.sent + 1
                await viewer.send_bytes(pack_frame(frame.seq, frame.captured_ms, time.time() * 1000, frame.stamp,
                                                   frame.jpeg))  # fmt: skip
        except (ConnectionError, RuntimeError):  # the viewer went away mid-send
            pass

    async def _on_text(self, viewer: Viewer, text: str) -> None:
        try:
            message = parse_control(text, self.config.max_text)
            kind = message["type"]
            if kind == "ack":
                if message["seq"] == viewer.last_seq:
                    viewer.ready.set()
            elif kind == "ping":
                await viewer.send_json({"type": "pong", "t": message["t"], "server_ms": time.time() * 1000})
            elif kind == "options":
                await self._configure(message["changes"])
            elif kind in ("pause", "resume", "step"):
                await asyncio.to_thread(getattr(self.session, kind))
                await self._broadcast(self._status_message())
            elif kind == "record":
                await self._record(viewer, message["on"])
        except ProtocolError as err:
            await viewer.send_json({"type": "error", "message": str(err)})

    async def _configure(self, changes: dict) -> None:
        if "target" in changes and self.session.explainer is not None:
            try:
                self.session.explainer.selector(target_of(changes["target"]))
            except ModelError as err:
                raise ProtocolError(str(err)) from None
        options = dataclasses.replace(self.session.options, **changes)
        self.session.configure(options)
        await self._broadcast({"type": "options", "options": self._options()})

    async def _record(self, viewer: Viewer, on: bool) -> None:
        if on:
            if self.session.recording is not None:
                raise ProtocolError(f"already recording to {self.session.recording.name}")
            name = datetime.now().strftime("camvideo-%Y%m%d-%H%M%S-%f.mp4")
            try:
                await asyncio.to_thread(self.session.start_recording, self.config.output_folder / name)
            except CamvideoError as err:
                raise ProtocolError(f"cannot record: {err}") from None
            await self._broadcast(self._status_message())
            return
        if self.session.recording is None:
            raise ProtocolError("not recording")
        await self._finish_recording()

    async def _finish_recording(self) -> Path | None:
        if self.session.recording is None:
            return None
        path = await asyncio.to_thread(self.session.stop_recording)
        if path is None:
            await self._broadcast({"type": "error", "message": f"recording failed: {self.session.notice}"})
            return None
        self.recordings[path.name] = path
        self.last_recording = path
        await self._broadcast({"type": "recorded", "url": f"/recordings/{path.name}", "name": path.name})
        return path

    async def _on_upload(self, viewer: Viewer, data: bytes) -> None:
        try:
            if self.browser is None:
                raise ProtocolError("this server's source is not the browser's camera (start it with `serve browser`)")
            if self.uploader is None or self.uploader.ws.closed:
                self.uploader = viewer  # the first to upload holds the camera until it leaves
            if viewer is not self.uploader:  # two cameras in one session would flicker between them
                await viewer.send_json({"type": "camera", "free": False,
                                        "message": "another viewer's camera feeds this session: you are watching"})  # fmt: skip
                return
            stamp, jpeg = unpack_upload(data, self.config.max_upload)
            width, height = jpeg_size(jpeg)
            if not (0 < width <= MAX_UPLOAD_SIDE and 0 < height <= MAX_UPLOAD_SIDE):
                raise ProtocolError(f"uploaded frame of {width}x{height}: at most {MAX_UPLOAD_SIDE} on a side")
            image = await asyncio.to_thread(_decode, jpeg)
            self.browser.push(image, stamp)
            await viewer.send_json({"type": "uploaded", "stamp": stamp})
        except ProtocolError as err:
            await viewer.send_json({"type": "error", "message": str(err)})

    # -- status -----------------------------------------------------------------------------------
    def _status_message(self) -> dict:
        session = self.session
        stats = session.stats()
        error = session.error
        return {"type": "status", "state": stats.state, "source": stats.status, "fps": round(self.hub.fps(), 2),
                "model_ms": round(stats.model_ms, 1), "every": stats.every, "every_auto": stats.every_auto,
                "dropped": stats.dropped, "device": stats.device, "paused": session.paused,
                "recording": stats.recording is not None, "recorded": stats.recorded, "viewers": len(self.viewers),
                "frames": self.hub.encoded,
                "error": (str(error) if isinstance(error, CamvideoError) else repr(error)) if error else ""}  # fmt: skip

    async def _broadcast(self, message: dict) -> None:
        for viewer in list(self.viewers):
            try:
                await viewer.send_json(message)
            except (ConnectionError, RuntimeError):
                pass

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.status_interval)
            if self.session.notice:
                notice, self.session.notice = self.session.notice, ""
                await self._broadcast({"type": "notice", "message": notice})
            if self.viewers:
                await self._broadcast(self._status_message())


def _decode(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ProtocolError("the uploaded frame could not be decoded as a JPEG")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
