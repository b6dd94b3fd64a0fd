"""`camvideo serve`: the protocol with a Python WebSocket client, the downloads, the safety rules,
and the command itself (URL first, loopback only, Ctrl-C finishes a recording).

Servers listen on 127.0.0.1 only and each test stops the one it started.
"""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import av
import cv2
import numpy as np
import psutil
import pytest
from live_helpers import CATS, ROOT
from serve_helpers import (
    WAIT,
    blue_over_red,
    closest_source_distance,
    connect,
    run,
    served,
    source_frames,
    ws_url,
)  # fmt: skip

from camvideo.errors import CamvideoError
from camvideo.serve import ServeConfig, Server, is_loopback, parse_control

NARRATED = ROOT / "sample_videos" / "cat_and_coffee_narrated.mp4"


# -- frames and controls ---------------------------------------------------------------------------
def test_frames_are_jpegs_of_the_source_size_with_capture_times() -> None:
    async def scenario(base: str) -> None:
        async with aiohttp.ClientSession() as http:
            client = await connect(http, base)
            hello = await client.message("hello")
            assert hello["browser"] is False and "jet" in hello["colormaps"] and hello["classes"][0] == "cat"
            seqs = []
            for _ in range(5):
                header, image = await client.next_frame()
                received = time.time() * 1000
                assert image.shape == (360, 640, 3)  # the clip's size (PyAV says 640x360)
                assert header.captured_ms <= header.sent_ms <= received + 1
                assert received - header.captured_ms < 60_000  # a capture time on the same clock, not 0
                seqs.append(header.seq)
            assert seqs == sorted(set(seqs))

    with served() as (_, base):
        run(scenario(base))


def test_alpha_zero_leaves_the_source_frame_and_colormaps_change_the_hue() -> None:
    frames = source_frames(CATS)

    async def scenario(base: str) -> None:
        async with aiohttp.ClientSession() as http:
            client = await connect(http, base)
            _, image = await client.next_frame()
            # alpha 1: the picture is the colormap alone; 'hot' never has more blue than red
            assert blue_over_red(image) < 0.01
            assert closest_source_distance(image, frames) > 30
            await client.ws.send_json({"type": "options", "colormap": "viridis"})
            image = await client.frames_after_options(5)
            assert blue_over_red(image) > 0.5  # viridis: purple, blue, teal
            await client.ws.send_json({"type": "options", "alpha": 0})
            image = await client.frames_after_options(5)
            # no heat: one of the clip's own frames, decoded by PyAV, up to JPEG's error
            assert closest_source_distance(image, frames) < 4
            await client.ws.send_json({"type": "options", "alpha": 0.5, "colormap": "jet"})
            image = await client.frames_after_options(5)
            assert closest_source_distance(image, frames) > 15

    with served(alpha=1.0, colormap="hot") as (_, base):
        run(scenario(base))


def test_snapshot_and_recording_download_and_decode(tmp_path: Path) -> None:
    async def scenario(base: str) -> Path:
        async with aiohttp.ClientSession() as http:
            client = await connect(http, base)
            await client.next_frame()
            async with http.get(base + "snapshot.png") as response:
                assert response.status == 200 and response.content_type == "image/png"
                png = cv2.imdecode(np.frombuffer(await response.read(), np.uint8), cv2.IMREAD_COLOR)
            assert png.shape == (360, 640, 3)
            await client.ws.send_json({"type": "record", "on": True})
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                status = await client.message("status")
                if status["recording"] and status["recorded"] >= 15:
                    break
            await client.ws.send_json({"type": "record", "on": False})
            done = await client.message("recorded")
            async with http.get(base + done["url"].lstrip("/")) as response:
                assert response.status == 200
                path = tmp_path / "download.mp4"
                path.write_bytes(await response.read())
            return path

    with served(NARRATED, folder=tmp_path) as (_, base):
        path = run(scenario(base))
    with av.open(str(path)) as container:
        assert container.streams.audio, "the narrated sample's sound is missing from the recording"
        video = sum(1 for _ in container.decode(video=0))
        assert video >= 15
        frame = next(av.open(str(path)).decode(video=0))
        assert (frame.width, frame.height) == (640, 360)


def test_a_second_viewer_shares_the_session() -> None:
    async def scenario(server: Server, base: str) -> None:
        async with aiohttp.ClientSession() as http:
            first, second = await connect(http, base), await connect(http, base)
            a, _ = await first.next_frame()
            b, _ = await second.next_frame()
            assert abs(a.seq - b.seq) < 30  # one numbering: the same frames
            await first.ws.send_json({"type": "options", "colormap": "viridis", "alpha": 1.0})
            assert (await second.message("options"))["options"]["colormap"] == "viridis"
            for _ in range(5):
                _, image = await second.next_frame()
            assert blue_over_red(image) > 0.5
            assert server.session.options.colormap == "viridis"
            status = await second.message("status")
            assert status["viewers"] == 2

    with served(alpha=1.0, colormap="hot") as (server, base):
        run(scenario(server, base))


def test_a_viewer_that_does_not_acknowledge_gets_no_backlog() -> None:
    """One frame in flight per viewer: nothing more until the ack, then the newest frame."""

    async def scenario(server: Server, base: str) -> None:
        async with aiohttp.ClientSession() as http:
            client = await connect(http, base)
            first, _ = await client.next_frame(ack=False)
            encoded = server.hub.encoded
            while server.hub.encoded < encoded + 20:  # the session goes on: 20 more frames
                await asyncio.sleep(0.05)
            while True:  # whatever came meanwhile must be text (status), never a frame
                try:
                    message = await client.ws.receive(timeout=0.5)
                except asyncio.TimeoutError:
                    break
                assert message.type == aiohttp.WSMsgType.TEXT, "a frame was sent before the ack"
            await client.ws.send_json({"type": "ack", "seq": first.seq})
            newest = server.hub.latest.seq
            header, _ = await client.next_frame()
            assert header.seq >= newest  # the newest, not the next in line
            assert client.frames == 2
            # a slow viewer (acks 0.3 s late) receives about one frame per ack, not the 30 fps
            sent_before, start = server.hub.encoded, time.monotonic()
            received = 0
            for _ in range(6):
                header, _ = await client.next_frame(ack=False)
                received += 1
                await asyncio.sleep(0.3)
                await client.ws.send_json({"type": "ack", "seq": header.seq})
            produced = server.hub.encoded - sent_before
            assert received == 6 and produced >= 2 * received, (produced, time.monotonic() - start)

    with served() as (server, base):
        run(scenario(server, base))


def test_the_mjpeg_stream_sends_jpegs_of_the_source_size() -> None:
    async def scenario(base: str) -> None:
        async with aiohttp.ClientSession() as http, http.get(base + "stream.mjpg") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
            reader = aiohttp.MultipartReader.from_response(response)
            for _ in range(3):
                part = await reader.next()
                assert part.headers["Content-Type"] == "image/jpeg"
                image = cv2.imdecode(np.frombuffer(await part.read(), np.uint8), cv2.IMREAD_COLOR)
                assert image.shape == (360, 640, 3)

    with served() as (_, base):
        run(scenario(base))


def test_a_viewer_that_vanishes_is_dropped() -> None:
    async def scenario(server: Server, base: str) -> None:
        http = aiohttp.ClientSession()
        client = await connect(http, base)
        await client.next_frame()
        assert len(server.viewers) == 1
        await http.close()  # the connection drops without a goodbye
        deadline = time.monotonic() + WAIT
        while server.viewers and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert server.viewers == set()
        async with aiohttp.ClientSession() as again:  # the session serves the next viewer
            await (await connect(again, base)).next_frame()

    with served() as (server, base):
        run(scenario(server, base))


# -- safety -------------------------------------------------------------------------------------------
def test_a_token_is_required_of_every_request() -> None:
    async def scenario(base: str) -> None:
        async with aiohttp.ClientSession() as http:
            for path in ("", "static/app.js", "stream.mjpg", "snapshot.png", "ws"):
                async with http.get(base + path) as response:
                    assert response.status == 401, path
                async with http.get(base + path + "?token=wrong") as response:
                    assert response.status == 401, path
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(ws_url(base))
            assert refused.value.status == 401
            async with http.get(base + "?token=s3cret") as response:
                assert response.status == 200 and "<canvas" in await response.text()
            client = await connect(http, base, token="s3cret")
            header, image = await client.next_frame()
            assert image.shape == (360, 640, 3)

    with served(token="s3cret") as (_, base):
        run(scenario(base))


def test_beyond_loopback_a_token_is_mandatory() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
    with pytest.raises(CamvideoError, match="token"):
        Server(None, ServeConfig(host="0.0.0.0"))  # type: ignore[arg-type]


def test_a_websocket_from_another_origin_is_refused() -> None:
    async def scenario(base: str) -> None:
        port = base.rsplit(":", 1)[1].strip("/")
        async with aiohttp.ClientSession() as http:
            for origin in ("http://evil.example", f"http://127.0.0.1:{int(port) + 1}", "null"):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await http.ws_connect(ws_url(base), origin=origin)
                assert refused.value.status == 403, origin
            client = await connect(http, base, origin=f"http://127.0.0.1:{port}")
            await client.next_frame()
            # no token: only loopback host names are answered (DNS rebinding)
            async with http.get(base, headers={"Host": f"evil.example:{port}"}) as response:
                assert response.status == 403

    with served() as (_, base):
        run(scenario(base))


def test_bad_messages_get_an_error_and_the_session_goes_on() -> None:
    bad = [
        ("x" * 5000, "too large"),
        ("{not json", "JSON"),
        ('["options"]', "type"),
        ('{"type": "launch"}', "unknown message"),
        ('{"type": "options", "alpha": 7}', "alpha"),
        ('{"type": "options", "colormap": "rainbow"}', "colormap"),
        ('{"type": "options", "model": "resnet50"}', "unknown option"),
        ('{"type": "options", "target": "giraffe"}', "giraffe"),
        ('{"type": "record"}', "on"),
        ('{"type": "ack", "seq": "one"}', "seq"),
    ]

    async def scenario(server: Server, base: str) -> None:
        async with aiohttp.ClientSession() as http:
            client = await connect(http, base)
            await client.next_frame()
            for text, expected in bad:
                await client.ws.send_str(text)
                error = await client.message("error")
                assert expected in error["message"], (text, error)
            await client.ws.send_bytes(b"CVU1" + struct.pack("<d", 1.0) + b"\xff\xd8")
            assert "browser" in (await client.message("error"))["message"]
            before = client.frames
            for _ in range(3):
                await client.next_frame()
            assert client.frames == before + 3 and server.session.state == "running"
            assert server.session.options.alpha == 0.5 and server.session.options.colormap == "jet"

    with served() as (server, base):
        run(scenario(server, base))


def test_browser_camera_uploads_come_back_annotated() -> None:
    """`serve browser` through the protocol: uploaded JPEGs come back with their stamps."""
    frames = source_frames(CATS)

    async def scenario(server: Server, base: str) -> None:
        async with aiohttp.ClientSession() as http:
            client = await connect(http, base)
            assert (await client.message("hello"))["browser"] is True
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frames[10], cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            stamps = set()
            for i in range(8):
                stamp = 1000.0 + i
                stamps.add(stamp)
                await client.ws.send_bytes(b"CVU1" + struct.pack("<d", stamp) + jpeg.tobytes())
                assert (await client.message("uploaded"))["stamp"] == stamp
            header, image = await client.next_frame()
            assert header.stamp in stamps and image.shape == (360, 640, 3)
            assert closest_source_distance(image, frames[10:11]) > 15  # heat on it
            # not a JPEG; a JPEG claiming to be huge; too many bytes
            await client.ws.send_bytes(b"CVU1" + struct.pack("<d", 1.0) + b"GIF89a" + bytes(100))
            assert "JPEG" in (await client.message("error"))["message"]
            huge = bytearray(jpeg.tobytes())
            sof = huge.find(b"\xff\xc0")
            huge[sof + 5 : sof + 9] = struct.pack(">HH", 20000, 20000)
            await client.ws.send_bytes(b"CVU1" + struct.pack("<d", 1.0) + bytes(huge))
            assert "at most" in (await client.message("error"))["message"]
            await client.ws.send_bytes(b"CVU1" + bytes(5 * 1024 * 1024))
            assert "too large" in (await client.message("error"))["message"]
            assert server.session.state == "running"

    with served(browser=True) as (server, base):
        run(scenario(server, base))


def test_protocol_parsing_checks_types() -> None:
    assert parse_control('{"type": "options", "every": "auto", "alpha": 1}')["changes"] == {"every": 0, "alpha": 1.0}
    assert parse_control('{"type": "options", "target": 3}')["changes"] == {"target": "3"}
    with pytest.raises(ValueError, match="every"):
        parse_control('{"type": "options", "every": -1}')
    with pytest.raises(ValueError, match="boxes"):
        parse_control('{"type": "options", "boxes": 1}')


def test_a_missing_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from camvideo.cli.serve import check_extra

    monkeypatch.setitem(sys.modules, "aiohttp", None)
    with pytest.raises(CamvideoError) as err:
        check_extra()
    assert (
        str(err.value) == 'camvideo serve needs aiohttp: pip install aiohttp (from the clone: pip install ".[serve]")'
    )


# -- the command ---------------------------------------------------------------------------------------
def test_the_command_prints_the_url_listens_on_loopback_and_ctrl_c_keeps_the_recording(tmp_path: Path) -> None:
    with socket_port() as port:
        pass
    env = {**os.environ, "CAMVIDEO_DEBUG": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "camvideo", "serve", "sample", "--port", str(port), "--output-folder", str(tmp_path),
         "--every", "4", "--backend", "torch"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        first = process.stdout.readline()  # type: ignore[union-attr]
        assert first.startswith(f"camvideo serve: open http://localhost:{port}/"), first
        listening = [
            c for c in psutil.Process(process.pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
        ]
        assert listening and {c.laddr.ip for c in listening} == {"127.0.0.1"}, listening

        async def record(base: str) -> None:
            async with aiohttp.ClientSession() as http:
                client = await connect(http, base)
                await client.next_frame()
                await client.ws.send_json({"type": "record", "on": True})
                while True:
                    status = await client.message("status")
                    if status["recorded"] >= 10:
                        return

        run(record(f"http://127.0.0.1:{port}/"))
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    saved = list(tmp_path.glob("camvideo-*.mp4"))
    assert len(saved) == 1 and f"recording saved to {saved[0]}" in err, err
    with av.open(str(saved[0])) as container:
        assert container.streams.audio  # the narrated sample's sound
        assert sum(1 for _ in container.decode(video=0)) >= 10


class socket_port:  # noqa: N801 - used as a context manager
    """A free TCP port on 127.0.0.1."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
