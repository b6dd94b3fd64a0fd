"""Helpers for the `camvideo serve` tests: a server on 127.0.0.1 with the tiny model, a WebSocket
client (aiohttp's), and references decoded independently of the server (PyAV)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import av
import cv2
import numpy as np
from live_helpers import CATS, tiny_explainer

from camvideo.jobs import LiveOptions, LiveSession
from camvideo.serve import BrowserSource, ServeConfig, Server, ServerThread, unpack_frame

WAIT = 60.0  # generous bound for anything the tests wait on (2 shared cores)


@contextlib.contextmanager
def served(source: object = CATS, *, token: str | None = None, browser: bool = False, folder: Path | None = None,
           host: str = "127.0.0.1", **options: object) -> Iterator[tuple[Server, str]]:  # fmt: skip
    """A server on 127.0.0.1 (a free port) over the tiny model; stopped on exit. Yields the
    server and its base URL (http://127.0.0.1:PORT/), without the token."""
    live = LiveOptions(**{"every": 1, "smooth": 0.0, "boxes": False, "labels": False, **options})
    source_ = BrowserSource() if browser else str(source)
    session = LiveSession(source_, live, explainer=tiny_explainer())
    config = ServeConfig(host=host, port=0, token=token, output_folder=folder or Path("."))
    server = Server(session, config, browser=source_ if browser else None)  # type: ignore[arg-type]
    runner = ServerThread(server)
    runner.start()
    try:
        yield server, f"http://{host}:{config.port}/"
    finally:
        runner.stop()
        assert session.threads_alive() == [], session.threads_alive()


@dataclass
class Client:
    """A WebSocket viewer that keeps what it received."""

    ws: aiohttp.ClientWebSocketResponse
    messages: list[dict] = field(default_factory=list)
    frames: int = 0

    async def next_frame(self, ack: bool = True, timeout: float = WAIT) -> tuple[object, np.ndarray]:
        """The next frame (header, RGB image); acknowledged unless ``ack`` is False."""
        deadline = time.monotonic() + timeout
        while True:
            message = await self.ws.receive(timeout=max(0.1, deadline - time.monotonic()))
            if message.type == aiohttp.WSMsgType.TEXT:
                self.messages.append(json.loads(message.data))
                continue
            assert message.type == aiohttp.WSMsgType.BINARY, message
            header, jpeg = unpack_frame(message.data)
            self.frames += 1
            if ack:
                await self.ws.send_json({"type": "ack", "seq": header.seq})
            return header, decode_jpeg(jpeg)

    async def message(self, kind: str, timeout: float = WAIT, ack: bool = True) -> dict:
        """The next JSON message of type ``kind`` (frames meanwhile are acknowledged)."""
        for i, m in enumerate(self.messages):
            if m["type"] == kind:
                return self.messages.pop(i)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = await self.ws.receive(timeout=max(0.1, deadline - time.monotonic()))
            if message.type == aiohttp.WSMsgType.BINARY:
                header, _ = unpack_frame(message.data)
                self.frames += 1
                if ack:
                    await self.ws.send_json({"type": "ack", "seq": header.seq})
                continue
            assert message.type == aiohttp.WSMsgType.TEXT, message
            data = json.loads(message.data)
            if data["type"] == kind:
                return data
            self.messages.append(data)
        raise TimeoutError(f"no {kind!r} message")

    async def frames_after_options(self, n: int = 3) -> np.ndarray:
        """The options were acknowledged (an ``options`` message came back): frames drawn
        after it; the last of ``n``."""
        await self.message("options")
        image = None
        for _ in range(n):
            _, image = await self.next_frame()
        return image  # type: ignore[return-value]


def ws_url(base: str, token: str | None = None) -> str:
    return base.replace("http://", "ws://") + "ws" + (f"?token={token}" if token else "")


async def connect(http: aiohttp.ClientSession, base: str, token: str | None = None, **kw: object) -> Client:
    return Client(await http.ws_connect(ws_url(base, token), **kw))


def run(coroutine) -> object:  # noqa: ANN001
    return asyncio.run(asyncio.wait_for(coroutine, 3 * WAIT))


def decode_jpeg(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def source_frames(path: Path = CATS) -> np.ndarray:
    """Every frame of the clip, decoded with PyAV (the independent reference)."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def closest_source_distance(image: np.ndarray, frames: np.ndarray) -> float:
    """Mean absolute difference (0..255) from ``image`` to the nearest frame of ``frames``."""
    diffs = np.abs(frames.astype(np.int16) - image.astype(np.int16)).mean(axis=(1, 2, 3))
    return float(diffs.min())


def blue_over_red(image: np.ndarray, margin: int = 20) -> float:
    """The fraction of pixels whose blue exceeds red by ``margin``: none in 'hot' (black →
    red → yellow → white, B ≤ R everywhere), most of 'viridis' (purple → blue → green)."""
    rgb = image.astype(np.int16)
    return float((rgb[..., 2] > rgb[..., 0] + margin).mean())
