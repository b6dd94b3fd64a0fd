"""Helpers for the live tests: a tiny model, a slow explainer, and a local network stream.

Network streams are served on 127.0.0.1 only.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import av
import numpy as np
import torch
from torch import nn

from camvideo import Explainer

ROOT = Path(__file__).resolve().parent.parent
CATS = ROOT / "sample_videos" / "cat_and_coffee.mp4"
BUNNY = ROOT / "sample_videos" / "big_buck_bunny.mp4"
NAMES = ["cat", "dog", "bird", "fish", "frog"]
LOCALHOST = "127.0.0.1"


class TinyNet(nn.Module):
    """conv-relu x2 -> global average pool -> linear: a GAP classifier CAM can explain."""

    def __init__(self, classes: int = len(NAMES), seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())  # fmt: skip
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def tiny_explainer(delay: float = 0.0, method: str = "cam") -> Explainer:
    """An Explainer on TinyNet (input short side 64); ``delay`` seconds added to each call
    (a deliberately slow engine). ``.calls`` counts the model runs."""
    explainer = Explainer(TinyNet().eval(), method=method, device="cpu", class_names=NAMES, input_size=64)
    explain = explainer.explain
    explainer.calls = 0  # type: ignore[attr-defined]

    def slow(frames, target=None):
        explainer.calls += 1  # type: ignore[attr-defined]
        if delay:
            time.sleep(delay)
        return explain(frames, target=target)

    explainer.explain = slow  # type: ignore[method-assign]
    return explainer


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def clip_images(path: Path = CATS, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    if size is not None:
        import cv2

        frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
    return frames


def _send(out_file, images: list[np.ndarray], fps: int, stop: threading.Event, counter: list[int], **open_kw) -> None:
    """Encode ``images`` (looped) as MPEG-TS H.264 into ``out_file`` at ``fps``, until ``stop``."""
    with av.open(out_file, "w", format="mpegts", **open_kw) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = images[0].shape[1], images[0].shape[0]
        stream.pix_fmt = "yuv420p"
        # no B-frames or lookahead: each frame leaves at once; a keyframe every 0.5 s so a
        # receiver that joins (or rejoins) late starts quickly
        stream.codec_context.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(fps // 2)}
        start, sent = time.monotonic(), 0
        while not stop.is_set():
            delay = start + sent / fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            frame = av.VideoFrame.from_ndarray(images[sent % len(images)], format="rgb24")
            frame.pts = sent
            out.mux(stream.encode(frame))
            sent += 1
            counter[0] += 1


class UdpStreamServer:
    """Sends a clip in real time, looped, as MPEG-TS datagrams to udp://127.0.0.1:PORT."""

    def __init__(self, port: int, images: list[np.ndarray] | None = None, fps: int = 30) -> None:
        self.url = f"udp://{LOCALHOST}:{port}"
        self.images = images if images is not None else clip_images()
        self.fps = fps
        self._sent = [0]
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-udp-server", daemon=True)

    @property
    def sent(self) -> int:
        return self._sent[0]

    def start(self) -> UdpStreamServer:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            _send(self.url + "?pkt_size=1316", self.images, self.fps, self._stop, self._sent)
        except BaseException as err:  # noqa: BLE001 - the test looks at it
            self.error = err

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class HttpStreamServer:
    """An HTTP server on 127.0.0.1 whose ``/live.ts`` is an endless real-time MPEG-TS stream
    (each client gets its own encoder, from the clip's start)."""

    def __init__(self, images: list[np.ndarray] | None = None, fps: int = 30) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        images = images if images is not None else clip_images()
        stop = self._stop = threading.Event()
        counter = self._sent = [0]

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path != "/live.ts":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    _send(self.wfile, images, fps, stop, counter)
                except (BrokenPipeError, ConnectionResetError, av.FFmpegError, OSError, ValueError):
                    pass  # the client went away

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((LOCALHOST, 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{LOCALHOST}:{self._server.server_address[1]}/live.ts"
        self._thread = threading.Thread(target=self._server.serve_forever, name="test-http-server", daemon=True)

    @property
    def sent(self) -> int:
        return self._sent[0]

    def start(self) -> HttpStreamServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def make_ts_with_audio(path: Path, seconds: float = 3.0) -> Path:
    """The start of the Big Buck Bunny sample as MPEG-TS, H.264 + AAC, a keyframe a second."""
    with av.open(str(BUNNY)) as src, av.open(str(path), "w", format="mpegts") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 640, 360, "yuv420p"
        video.codec_context.options = {"preset": "ultrafast", "g": "25"}
        audio = out.add_stream("aac", rate=48000)
        for frame in src.decode(src.streams.video[0], src.streams.audio[0]):
            if frame.time is not None and frame.time > seconds:
                continue
            if isinstance(frame, av.VideoFrame):
                frame = frame.reformat(width=640, height=360)
                frame.pict_type = av.video.frame.PictureType.NONE
                out.mux(video.encode(frame))
            else:
                out.mux(audio.encode(frame))
        out.mux(video.encode())
        out.mux(audio.encode())
    return path


class HttpFileServer:
    """Serves one file over HTTP on 127.0.0.1 at ``rate`` bytes per second (a live-ish stream)."""

    def __init__(self, path: Path, seconds: float) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        data = path.read_bytes()
        chunk = max(1, int(len(data) / seconds / 20))  # 20 writes a second

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.end_headers()
                try:
                    for start in range(0, len(data), chunk):
                        self.wfile.write(data[start : start + chunk])
                        time.sleep(0.05)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((LOCALHOST, 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{LOCALHOST}:{self._server.server_address[1]}/{path.name}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="test-http-file", daemon=True)

    def start(self) -> HttpFileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
