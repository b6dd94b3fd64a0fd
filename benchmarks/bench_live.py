"""Live mode: capture-to-display latency and displayed frame rate, in the real window.

A 640x480 30 fps source (the cat clip, resized, encoded once into a temporary file)
is played in real time by :class:`~camvideo.sources.PacedFileSource`, looped, into the
desktop app's :class:`~ui.window.MainWindow` (Qt offscreen platform unless a display
is set). Latency is measured where the app measures it: from the frame's capture
time to the end of the paint that showed it. The first seconds (model warm-up) are
left out.

    python benchmarks/bench_live.py                      # every=1,2,3 and auto, default model and backend
    python benchmarks/bench_live.py --every 1 2 3 4 auto --seconds 20
    python benchmarks/bench_live.py --every 1 auto --backend openvino

``auto`` (``camvideo live``'s default) picks the interval from the measured model and
drawing times (camvideo.jobs.pacing); its row shows the interval it settled on, e.g.
``auto (2)``, and a line under the table the times it chose from.

Prints a Markdown table on stdout (progress on stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av  # noqa: E402
import cv2  # noqa: E402
from _common import SAMPLES, fmt, machine_facts, markdown_table, say  # noqa: E402

from camvideo.jobs.pacing import STEP_SHARE  # noqa: E402
from camvideo.options import BACKEND_NAMES  # noqa: E402

TARGET_P95_MS, TARGET_FPS = 100.0, 25.0


def make_source_clip(path: Path, width: int = 640, height: int = 480, fps: int = 30) -> Path:
    """The cat clip resized to ``width`` x ``height`` (aspect not kept: it only has to move)."""
    with av.open(str(SAMPLES / "cat_and_coffee.mp4")) as src, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = {"preset": "veryfast", "crf": "20"}
        for i, frame in enumerate(src.decode(video=0)):
            image = cv2.resize(frame.to_ndarray(format="rgb24"), (width, height), interpolation=cv2.INTER_AREA)
            new = av.VideoFrame.from_ndarray(image, format="rgb24")
            new.pts = i
            out.mux(stream.encode(new))
        out.mux(stream.encode(None))
    return path


def measure(
    clip: Path, every: int, seconds: float, warmup: float, explainer, settings_path: Path, threads: int, backend: str
) -> dict:
    from PyQt6.QtCore import QEventLoop, QSettings, QTimer

    from camvideo.jobs import LatencyMeter, LiveOptions
    from camvideo.sources import PacedFileSource
    from ui.app import application
    from ui.window import AppOptions, MainWindow

    app = application()
    options = LiveOptions(every=every, model_threads=threads, backend=backend)
    settings = QSettings(str(settings_path), QSettings.Format.IniFormat)
    every_field = frozenset(f.name for f in dataclasses.fields(LiveOptions))  # saved settings must not apply
    window = MainWindow(AppOptions(source=PacedFileSource(clip, loop=True), spec=str(clip), options=options,
                                   explainer=explainer, settings=settings, output_folder=settings_path.parent,
                                   explicit=every_field))  # fmt: skip
    window.resize(1100, 600)
    window.show()

    def run_for(secs: float) -> None:
        loop = QEventLoop()
        QTimer.singleShot(round(secs * 1000), loop.quit)
        loop.exec()

    deadline = time.monotonic() + 120
    while window.meter.count == 0 and time.monotonic() < deadline:
        run_for(0.2)
    run_for(warmup)
    window.meter = LatencyMeter(window=1e9)  # measure from here
    before = window.session.stats()
    start = time.monotonic()
    run_for(seconds)
    wall = time.monotonic() - start
    after = window.session.stats()
    pacing = window.session.pacing
    meter = window.meter
    threads = threads_line()
    window.close()
    app.processEvents()
    captured = after.frames_read - before.frames_read
    dropped = after.dropped - before.dropped
    return {
        "every": f"auto ({pacing.every if pacing is not None else after.every})" if every == 0 else every,
        "wall": wall,
        "fps": meter.count / wall,
        "p50": 1000 * (meter.percentile(50) or float("nan")),
        "p95": 1000 * (meter.percentile(95) or float("nan")),
        "captured": captured,
        "shown": meter.count,
        "dropped": dropped,
        "model_runs": (after.model_runs - before.model_runs) / wall,
        "model_ms": after.model_ms,
        "auto": None if pacing is None else auto_line(pacing),
        "threads": threads,
    }


def threads_line() -> str:
    """The threads running now: Python's by name, and the process's (OpenMP, the runtime, FFmpeg, Qt)."""
    import threading

    names = sorted(t.name for t in threading.enumerate())
    status = Path("/proc/self/status")
    total = next((line.split()[1] for line in status.read_text().splitlines() if line.startswith("Threads:")), "?") \
        if status.exists() else "?"  # fmt: skip
    return f"threads while measuring: {total} in the process; Python's: {', '.join(names)}"


def auto_line(pacing) -> str:
    """What ``--every auto`` chose from (camvideo.jobs.pacing.EveryAuto's measurements)."""

    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{1000 * value:.1f} ms"

    step_model = None if pacing.step_seconds is None else pacing.step_seconds - pacing.render_seconds
    return (f"every auto settled on {pacing.every}: a frame in step {ms(pacing.step_seconds)} (the model "
            f"{ms(step_model)}{'' if pacing.step_model else ', estimated'}, drawing {ms(pacing.render_seconds)}), "
            f"the model in the background {ms(pacing.model_seconds)}, frame interval {ms(pacing.frame_seconds)}; "
            f"in step when a frame takes at most {100 * STEP_SHARE:.0f} % of the interval")  # fmt: skip


def _every(text: str) -> int:
    return 0 if text == "auto" else int(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=_every, nargs="+", default=[1, 2, 3, 0],
                        help="model every N frames, or auto [1 2 3 auto]")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per setting [15]")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds left out after the first frame [3]")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--model-threads", type=int, default=1, help="torch threads for the background model [1]")
    parser.add_argument("--backend", default="auto", choices=BACKEND_NAMES,
                        help="how the network runs (camvideo live --backend) [auto]")  # fmt: skip
    args = parser.parse_args()

    import torch

    from camvideo import Explainer
    from camvideo.options import ModelOptions

    with tempfile.TemporaryDirectory() as tmp:
        clip = make_source_clip(Path(tmp) / "source_640x480.mp4")
        explainer = Explainer.from_options(ModelOptions(model=args.model, device="cpu", backend=args.backend))
        backend = getattr(explainer, "backend", "torch")
        say(f"{args.model} on the {backend} backend (asked: {args.backend})")
        rows, auto_lines = [], []
        facts = machine_facts()
        # every=1 first: the background model then limits torch threads; auto (0) last
        for every in sorted(args.every, key=lambda n: n or 10**6):
            say(f"every={every or 'auto'} ...")
            r = measure(clip, every, args.seconds, args.warmup, explainer, Path(tmp) / "settings.ini",
                        args.model_threads, args.backend)  # fmt: skip
            threads = r["threads"]
            if r["auto"] is not None:
                auto_lines.append(r["auto"])
                say(f"  {r['auto']}")
            ok = r["p95"] <= TARGET_P95_MS and r["fps"] >= TARGET_FPS
            rows.append([
                r["every"], fmt(r["captured"] / r["wall"]), fmt(r["fps"]), fmt(r["p50"], 0), fmt(r["p95"], 0),
                f"{r['dropped']} / {r['captured']} ({100 * r['dropped'] / max(1, r['captured']):.0f} %)",
                fmt(r["model_runs"]), fmt(r["model_ms"], 0), "yes" if ok else "no",
            ])  # fmt: skip
            say(f"  {rows[-1]}")
    print(f"### Live: 640x480 30 fps source, {args.model} on {backend}, CPU, capture → display in the window\n")
    for line in facts:
        print(line)
    print(f"- {args.seconds:g} s measured per row after {args.warmup:g} s of warm-up; torch threads for the "
          f"background model (every > 1): {args.model_threads}; every = 1 runs the model in step with the display "
          f"({torch.get_num_threads()} threads at the end)\n")  # fmt: skip
    print(
        "source fps: frames the paced source delivered (below 30 when the machine is too busy to decode in "
        "time); dropped: frames never shown (stale when the next arrived).\n"
    )
    print(markdown_table(
        ["every", "source fps", "displayed fps", "p50 latency (ms)", "p95 latency (ms)", "dropped / captured", "model runs/s",
         "model ms/run", f"meets ≤{TARGET_P95_MS:.0f} ms p95, ≥{TARGET_FPS:.0f} fps"],
        rows,
    ))  # fmt: skip
    for line in auto_lines:
        print(f"\n{line}")
    print(f"\n{threads} (the last row)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
