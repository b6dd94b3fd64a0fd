"""`camvideo serve`: the token cookie, the Host check on other loopback addresses, the URLs
printed for every interface, one browser camera at a time (frames of another size resized),
and an MJPEG reader that reads slowly gets recent frames, not a backlog.

Servers listen on 127.x addresses only and each test stops the one it started.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import av
import cv2
import numpy as np
from live_helpers import CATS
from serve_helpers import WAIT, connect, run, served, source_frames, ws_url

from camvideo.serve import Server, urls_to_open


def upload_message(stamp: float, image: np.ndarray) -> bytes:
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return b"CVU1" + struct.pack("<d", stamp) + jpeg.tobytes()


# -- the token as a cookie ---------------------------------------------------------------------------
def test_the_token_in_the_url_sets_a_cookie_that_lets_the_pages_assets_and_socket_in() -> None:
    async def scenario(server: Server, base: str) -> None:
        name = f"camvideo_token_{server.config.port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "?token=s3cret") as response:
                assert response.status == 200
                cookie = response.cookies[name]
                assert cookie.value == "s3cret" and cookie["httponly"] and cookie["path"] == "/"
                assert cookie["samesite"] == "Strict"
        # the cookie alone, as the page's relative URLs send it: no query, no header
        for value, expected in (("s3cret", 200), ("wrong", 401), ("s3cre", 401)):
            headers = {"Cookie": f"{name}={value}"}
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
                for path in ("static/app.js", "static/style.css", "stream.mjpg", ""):
                    async with http.get(base + path, headers=headers) as response:
                        assert response.status == expected, (path, value)
                if expected == 200:
                    client = await connect(http, base, headers=headers)
                    _, image = await client.next_frame()
                    assert image.shape == (360, 640, 3)
                else:
                    try:
                        await http.ws_connect(ws_url(base), headers=headers)
                        raise AssertionError("the socket opened with a wrong cookie")
                    except aiohttp.WSServerHandshakeError as refused:
                        assert refused.status == 401

    with served(token="s3cret") as (server, base):
        run(scenario(server, base))


# -- the Host check and the printed URLs -----------------------------------------------------------
def test_a_server_on_another_loopback_address_answers_its_own_host_name() -> None:
    async def scenario(server: Server, base: str) -> None:
        port = server.config.port
        assert server.url == f"http://127.0.0.2:{port}/"
        async with aiohttp.ClientSession() as http:
            for host, expected in (("127.0.0.2", 200), ("127.0.0.9", 200), ("localhost", 200), ("evil.example", 403)):
                async with http.get(base, headers={"Host": f"{host}:{port}"}) as response:
                    assert response.status == expected, host
            await (await connect(http, base)).next_frame()

    with served(host="127.0.0.2") as (server, base):
        run(scenario(server, base))


def test_every_interface_prints_this_machines_name_and_127_0_0_1_with_the_token() -> None:
    name = socket.gethostname()
    assert urls_to_open("0.0.0.0", 8000, "tok") == [
        f"http://{name}:8000/?token=tok",
        "http://127.0.0.1:8000/?token=tok",
    ]
    assert urls_to_open("::", 81, "t") == [f"http://{name}:81/?token=t", "http://127.0.0.1:81/?token=t"]
    assert urls_to_open("127.0.0.1", 8000, None) == ["http://localhost:8000/"]
    assert urls_to_open("::1", 8000, None) == ["http://[::1]:8000/"]
    assert urls_to_open("192.168.1.5", 9, "x") == ["http://192.168.1.5:9/?token=x"]


# -- one browser camera at a time ------------------------------------------------------------------
def test_only_the_first_uploading_viewer_feeds_the_session_until_it_leaves() -> None:
    frames = source_frames(CATS)
    first_stamps = {1000.0 + i for i in range(6)}
    second_stamps = {5000.0 + i for i in range(6)}

    async def scenario(server: Server, base: str) -> None:
        async with aiohttp.ClientSession() as http:
            first, second = await connect(http, base), await connect(http, base)
            for a, b in zip(sorted(first_stamps), sorted(second_stamps)):
                await first.ws.send_bytes(upload_message(a, frames[5]))
                assert (await first.message("uploaded"))["stamp"] == a
                await second.ws.send_bytes(upload_message(b, frames[40]))
                busy = await second.message("camera")
                assert busy["free"] is False and "watching" in busy["message"]
            assert server.browser is not None and server.browser.pushed == len(first_stamps)
            # both viewers see the first viewer's frames (their stamps), never the second's
            for client in (first, second):
                header, _ = await client.next_frame()
                assert header.stamp in first_stamps, header.stamp
            await first.ws.close()
            assert (await second.message("camera"))["free"] is True
            await second.ws.send_bytes(upload_message(5100.0, frames[40]))
            assert (await second.message("uploaded"))["stamp"] == 5100.0
            deadline = time.monotonic() + WAIT
            while (await second.next_frame())[0].stamp != 5100.0:
                assert time.monotonic() < deadline

    with served(browser=True) as (server, base):
        run(scenario(server, base))


def test_a_camera_changing_size_mid_recording_is_resized_and_the_recording_finishes(tmp_path: Path) -> None:
    frames = source_frames(CATS)

    async def until_stamp(client, stamp: float) -> np.ndarray:  # noqa: ANN001
        deadline = time.monotonic() + WAIT
        while True:
            header, image = await client.next_frame()
            if header.stamp == stamp:
                return image
            assert time.monotonic() < deadline

    async def scenario(server: Server, base: str) -> dict:
        async with aiohttp.ClientSession() as http:
            client = await connect(http, base)
            await client.ws.send_bytes(upload_message(1.0, frames[0]))
            await until_stamp(client, 1.0)
            await client.ws.send_json({"type": "record", "on": True})
            stamp = 2.0
            for image in (frames[10], cv2.resize(frames[20], (320, 180)), cv2.resize(frames[30], (320, 240)),
                          frames[40]):  # fmt: skip
                for _ in range(3):
                    await client.ws.send_bytes(upload_message(stamp, image))
                    back = await until_stamp(client, stamp)
                    assert back.shape == (360, 640, 3)
                    stamp += 1
            await client.ws.send_json({"type": "record", "on": False})
            done = await client.message("recorded")
            assert not [m for m in client.messages if m["type"] == "error"], client.messages
            return done

    with served(browser=True, folder=tmp_path) as (server, base):
        done = run(scenario(server, base))
    with av.open(str(tmp_path / done["name"])) as container:
        sizes = [(f.width, f.height) for f in container.decode(video=0)]
    assert len(sizes) >= 12 and set(sizes) == {(640, 360)}


# -- MJPEG for a slow reader -------------------------------------------------------------------------
def test_a_slow_mjpeg_reader_gets_recent_frames_not_a_backlog() -> None:
    stall = 60  # frames encoded while the reader reads nothing

    def read_part(sock: socket.socket, buffer: bytearray) -> int:
        """The next part's sequence number (its JPEG is read and dropped)."""
        while (match := re.search(rb"Content-Length: (\d+)\r\nX-Sequence: (\d+)\r\n\r\n", buffer)) is None:
            buffer += sock.recv(65536)
        end, seq = match.end() + int(match.group(1)), int(match.group(2))
        while len(buffer) < end:
            buffer += sock.recv(65536)
        del buffer[:end]
        return seq

    async def scenario(server: Server, base: str) -> tuple[int, list[int]]:
        def reader() -> tuple[int, list[int]]:
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
                sock.connect(("127.0.0.1", server.config.port))
                sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                buffer = bytearray()
                first = read_part(sock, buffer)
                deadline = time.monotonic() + WAIT
                while server.hub.encoded < first + stall:  # wait on a count, not a duration
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                resumed = server.hub.encoded
                return resumed, [read_part(sock, buffer) for _ in range(30)]

        return await asyncio.to_thread(reader)

    with served() as (server, base):
        resumed, seqs = run(scenario(server, base))
    assert seqs == sorted(seqs)
    stale = [seq for seq in seqs if seq < resumed]
    # what the socket buffers held: a few frames, then the newest again (latest wins)
    assert len(stale) <= 10, (resumed, seqs)
    assert seqs[-1] >= resumed


# -- the command: a busy port before the model ------------------------------------------------------
def test_a_busy_port_is_reported_before_the_model_loads() -> None:
    # a model that cannot load: had it been loaded first, the error would be about the model
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "camvideo", "serve", "sample", "--port", str(port), "--model",
                               "no_such_model_xyz"], capture_output=True, text=True, timeout=WAIT * 3)  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [f"camvideo: error: cannot listen on 127.0.0.1:{port} "
                                                 "(Address already in use); choose another --port"]  # fmt: skip
