"""The long soak: many frames through the whole file pipeline, then many engine cycles,
with memory, threads, file descriptors and hooks sampled all along. Prints a Markdown
report (stdout) and progress (stderr).

``tests/test_soak.py`` is the bounded CI version (20,000 frames, 1,000 cycles); this is
the same with no bound:

    python benchmarks/soak.py                                  # 300,000 frames, 10,000 cycles
    python benchmarks/soak.py --frames 1000000 --size 64 --every 50000
    python benchmarks/soak.py --model efficientnet_lite0 --size 224 --frames 20000

Stages: a synthetic 30 fps stream (16 noise images, a moving line) → ``FrameAnnotator``
(tiny GAP model, CAM, smoothing 0.25 s, jet, boxes and labels) → ``Mp4Sink`` (x264
ultrafast) to a temporary MP4, in ``Pipeline`` threads, file policy. Growth is measured
from the sample at ``--warm-up`` frames.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import corpus  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
from _common import fmt, machine_facts, markdown_table, say  # noqa: E402

from camvideo.engine import METHODS, Explainer  # noqa: E402
from camvideo.jobs import FrameAnnotator  # noqa: E402
from camvideo.pipeline import Pipeline  # noqa: E402
from camvideo.render import Renderer, TemporalSmoother  # noqa: E402
from camvideo.sinks import Mp4Sink  # noqa: E402
from camvideo.types import Frame, VideoInfo  # noqa: E402

MiB = 2**20


def snapshot(process: psutil.Process, model) -> dict:
    return {
        "rss": process.memory_info().rss,
        "threads": threading.active_count(),
        "os_threads": process.num_threads(),
        "fds": process.num_fds(),
        "hooks": corpus.count_hooks(model),
    }


def synthetic(n: int, size: int):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(16)]
    for i in range(n):
        image = images[i % 16].copy()
        image[i % size] = 255
        yield Frame(index=i, image=image, pts=i, time=i / 30, captured=time.monotonic())


def make_explainer(name: str) -> Explainer:
    if name == "tiny":
        return corpus.tiny_explainer()
    return Explainer(name, device="cpu")


def soak(args: argparse.Namespace) -> tuple[list[list[str]], dict]:
    process = psutil.Process()
    explainer = make_explainer(args.model)
    annotator = FrameAnnotator(
        explainer, Renderer("jet", 0.5, class_names=explainer.class_names), TemporalSmoother(0.25)
    )
    info = VideoInfo(width=args.size, height=args.size, fps=30.0, time_base=Fraction(1, 30))
    samples: list[tuple[int, float, dict]] = []
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "soak.mp4"
        with Mp4Sink(out, info, preset="ultrafast") as sink:

            def consume(result) -> None:
                sink.encode(result.image, result.frame.pts, result.frame.time)
                done = result.frame.index + 1
                if done % args.every == 0 or done == args.warm_up:
                    samples.append((done, time.monotonic() - start, snapshot(process, explainer.model)))
                    say(f"  {done} frames, {samples[-1][1]:.0f} s, RSS {samples[-1][2]['rss'] / MiB:.1f} MiB")

            stats = Pipeline(synthetic(args.frames, args.size), annotator, consume, batch_size=args.batch_size).run()
        size = out.stat().st_size
    explainer.close()
    gc.collect()
    after = snapshot(process, explainer.model)
    reference = next(s for n, _, s in samples if n >= args.warm_up)
    rows = []
    for done, seconds, s in samples:
        rows.append([f"{done:,}", fmt(seconds, 0), fmt(done / seconds, 0), fmt(s["rss"] / MiB),
                     fmt((s["rss"] - reference["rss"]) / MiB, 2) if done >= args.warm_up else "(warm-up)",
                     s["threads"], s["os_threads"], s["fds"], s["hooks"]])  # fmt: skip
    steady = [s for n, _, s in samples if args.warm_up <= n <= args.frames - args.every]
    summary = {
        "frames": stats.frames_written,
        "wall": stats.wall,
        "fps": stats.fps,
        "mp4_mib": size / MiB,
        "growth_mib": (max(s["rss"] for s in steady) - reference["rss"]) / MiB if steady else float("nan"),
        "constant": all(len({s[k] for s in steady}) == 1 for k in ("threads", "os_threads", "fds", "hooks"))
        if steady
        else None,  # fmt: skip
        "after": after,
    }
    return rows, summary


def cycles(args: argparse.Namespace) -> tuple[list[list[str]], dict]:
    process = psutil.Process()
    model = corpus.tiny_net()
    frames = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    methods = sorted(m for m in METHODS if m != "rollout")  # rollout needs a ViT, not this CNN
    rows: list[list[str]] = []
    first = None
    start = time.monotonic()
    for i in range(args.cycles + 50):
        with corpus.tiny_explainer(model) as explainer:
            explainer.set_method(methods[i % len(methods)])
            explainer.explain(frames)
        assert corpus.count_hooks(model) == 0
        if i == 49:
            gc.collect()
            first = snapshot(process, model)
            start = time.monotonic()
        elif i >= 50 and (i - 49) % max(1, args.cycles // 5) == 0:
            gc.collect()
            s = snapshot(process, model)
            rows.append([f"{i - 49:,}", fmt(time.monotonic() - start, 1), fmt(s["rss"] / MiB),
                         fmt((s["rss"] - first["rss"]) / MiB, 2), s["threads"], s["os_threads"], s["fds"], s["hooks"]])  # fmt: skip
    return rows, {"first": first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300_000)
    parser.add_argument("--size", type=int, default=32, help="square frame side [%(default)s]")
    parser.add_argument("--every", type=int, default=25_000, help="sample every N frames [%(default)s]")
    parser.add_argument("--warm-up", type=int, default=2_000, help="frames before the reference sample [%(default)s]")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="tiny", help="tiny, or a registry name such as efficientnet_lite0")
    parser.add_argument("--cycles", type=int, default=10_000, help="engine create/explain/close cycles [%(default)s]")
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)

    print("# camvideo soak\n")
    print("\n".join(machine_facts()) + "\n")
    say(f"soak: {args.frames} frames of {args.size}x{args.size} ...")
    rows, summary = soak(args)
    print(f"## {summary['frames']:,} frames of {args.size}x{args.size}, model {args.model}, batch {args.batch_size}\n")
    print(
        markdown_table(["frames", "s", "fps", "RSS MiB", "growth MiB", "threads", "OS threads", "fds", "hooks"], rows)
    )
    after = summary["after"]
    print(f"\n{summary['frames']:,} frames in {summary['wall']:.0f} s ({summary['fps']:.0f} fps), MP4 "
          f"{summary['mp4_mib']:.1f} MiB; RSS growth after warm-up {summary['growth_mib']:.2f} MiB; threads, fds and "
          f"hooks constant while running: {summary['constant']}; after closing: {after['threads']} Python threads, "
          f"{after['fds']} fds, {after['hooks']} hooks\n")  # fmt: skip
    if args.cycles:
        say(f"engine: {args.cycles} create/explain/close cycles ...")
        rows, _ = cycles(args)
        print(f"## {args.cycles:,} engine create/explain/close cycles (every method in turn, tiny model)\n")
        print(markdown_table(["cycles", "s", "RSS MiB", "growth MiB", "threads", "OS threads", "fds", "hooks"], rows))


if __name__ == "__main__":
    main()
