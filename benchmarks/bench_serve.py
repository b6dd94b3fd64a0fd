"""`camvideo serve` against the desktop app, on the same 640x480 30 fps source.

The source is bench_live's clip (the cat clip resized to 640x480, played in real time,
looped). For each ``--every``:

* **desktop**: bench_live's own measurement (the real window, Qt offscreen): frames
  displayed per second and capture-to-paint latency;
* **serve**: the real command (``python -m camvideo serve CLIP``) in its own process, and a
  WebSocket client here that decodes each JPEG and acknowledges it at once: frames
  delivered per second, capture-to-receipt latency (the frame header's capture time; one
  machine, one clock), bandwidth, and the server process's CPU time per delivered frame;
* **serve, throttled**: a second client on the same server that acknowledges each frame
  ``--throttle`` ms late (a slow network or a busy tab): its latency must stay bounded and
  the frames it cannot take are dropped, not queued.

    python benchmarks/bench_serve.py                       # every auto, 15 s per row
    python benchmarks/bench_serve.py --every 1 auto --seconds 20

Prints a Markdown table on stdout (progress on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
from _common import fmt, machine_facts, markdown_table, say  # noqa: E402
from bench_live import make_source_clip, measure  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def watch(url: str, seconds: float, warmup: float, delay: float, server: psutil.Process) -> dict:
    """One client for ``warmup`` + ``seconds`` after its first frame; acks ``delay`` s late."""
    import aiohttp

    from camvideo.serve import unpack_frame

    latencies, received, bytes_in, every = [], 0, 0, 0
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        start = end = None
        cpu0 = None
        while end is None or time.monotonic() < end:
            message = await ws.receive(timeout=120)
            if message.type == aiohttp.WSMsgType.TEXT:  # status: the model's interval now
                every = json.loads(message.data).get("every", every)
                continue
            header, jpeg = unpack_frame(message.data)
            cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)  # what a viewer must do
            now = time.monotonic()
            if start is None:
                start, end = now, now + warmup + seconds
            elif now >= end - seconds:
                if cpu0 is None:
                    cpu0, measured_from, frames_from = sum(server.cpu_times()[:2]), now, header.seq
                latencies.append(time.time() * 1000 - header.captured_ms)
                received += 1
                bytes_in += len(message.data)
                last_seq = header.seq
            if delay:
                await asyncio.sleep(delay)
            await ws.send_json({"type": "ack", "seq": header.seq})
    wall = time.monotonic() - measured_from
    cpu = sum(server.cpu_times()[:2]) - cpu0
    encoded = last_seq - frames_from + 1  # frames the server produced meanwhile (one numbering)
    return {"fps": received / wall, "p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
            "mbit": 8 * bytes_in / wall / 1e6, "cpu_ms": 1000 * cpu / max(1, encoded), "received": received,
            "encoded": encoded, "every": every, "max": max(latencies, default=float("nan"))}  # fmt: skip


def serve_rows(clip: Path, every: int, seconds: float, warmup: float, throttle: float, model: str,
               backend: str) -> list[dict]:  # fmt: skip
    port = free_port()
    command = [sys.executable, "-m", "camvideo", "serve", str(clip), "--port", str(port), "--model", model,
               "--every", str(every or "auto"), "--device", "cpu", "--backend", backend]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        process.stdout.readline()  # type: ignore[union-attr]  # the URL: listening
        url = f"ws://127.0.0.1:{port}/ws"
        server = psutil.Process(process.pid)
        normal = asyncio.run(watch(url, seconds, warmup, 0.0, server))
        throttled = asyncio.run(watch(url, seconds, warmup, throttle, server))
    finally:
        process.terminate()
        process.wait(60)
    return [normal, throttled]


def _every(text: str) -> int:
    return 0 if text == "auto" else int(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=_every, nargs="+", default=[0], help="model every N frames, or auto [auto]")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per row [15]")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds left out after the first frame [3]")
    parser.add_argument("--throttle", type=float, default=100.0, help="the throttled client's ack delay, ms [100]")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--backend", default="auto", help="how the network runs, in both (live --backend) [auto]")
    args = parser.parse_args()

    from camvideo import Explainer
    from camvideo.options import ModelOptions

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_source_clip(Path(tmp) / "source_640x480.mp4")
        explainer = Explainer.from_options(ModelOptions(model=args.model, device="cpu", backend=args.backend))
        facts = machine_facts()
        for every in args.every:
            name = "auto" if every == 0 else str(every)
            say(f"every={name}: desktop ...")
            desk = measure(clip, every, args.seconds, args.warmup, explainer, Path(tmp) / "settings.ini", 1,
                           args.backend)  # fmt: skip
            say(f"every={name}: serve ...")
            normal, slow = serve_rows(
                clip, every, args.seconds, args.warmup, args.throttle / 1000, args.model, args.backend
            )
            fps_ok = normal["fps"] >= 0.9 * desk["fps"]
            p95_ok = normal["p95"] <= desk["p95"] + 30
            rows.append([f"desktop, every {desk['every']}", fmt(desk["fps"]), fmt(desk["p50"], 0), fmt(desk["p95"], 0),
                         "—", "—", "—", ""])  # fmt: skip
            rows.append([f"serve, every {name}" + (f" ({normal['every']})" if every == 0 else ""), fmt(normal["fps"]), fmt(normal["p50"], 0), fmt(normal["p95"], 0),
                         fmt(normal["mbit"]), fmt(normal["cpu_ms"]), f"{normal['received']} / {normal['encoded']}",
                         f"fps {'yes' if fps_ok else 'no'} ({normal['fps'] / desk['fps']:.2f}x); "
                         f"p95 {'yes' if p95_ok else 'no'} ({normal['p95'] - desk['p95']:+.0f} ms)"])  # fmt: skip
            bounded = slow["max"] < 2 * (args.throttle + desk["p95"]) + 100
            rows.append([f"serve, acks {args.throttle:.0f} ms late", fmt(slow["fps"]), fmt(slow["p50"], 0),
                         fmt(slow["p95"], 0), fmt(slow["mbit"]), fmt(slow["cpu_ms"]),
                         f"{slow['received']} / {slow['encoded']}",
                         f"max {slow['max']:.0f} ms: {'bounded' if bounded else 'NOT bounded'}; "
                         f"{slow['encoded'] - slow['received']} dropped"])  # fmt: skip
            say(f"  {rows[-3:]}")
    print(f"### camvideo serve vs the desktop app: 640x480 30 fps source, {args.model}, CPU, backend {args.backend}\n")
    for line in facts:
        print(line)
    print(f"- {args.seconds:g} s measured per row after {args.warmup:g} s of warm-up; the client decodes each JPEG "
          "and acknowledges it; latency: capture → paint (desktop), capture → receipt (serve)\n")  # fmt: skip
    print(markdown_table(
        ["run", "frames/s", "p50 latency (ms)", "p95 latency (ms)", "Mbit/s", "server CPU-ms / frame produced",
         "received / produced", "goal (≥0.9x desktop fps, p95 ≤ desktop + 30 ms)"],
        rows,
    ))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
