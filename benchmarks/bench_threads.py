"""The annotate pipeline with its thread budget against every pool left unbounded.

``annotate_video`` (the default model and method, the CLI's defaults) on a sample, in two
settings, interleaved round-robin so that other users' load hits both alike:

- ``plan``: what annotate does, :func:`camvideo.jobs.threads.plan_threads` for this machine
  (torch and OpenCV threads, the decoder's ``thread_count``, x264's ``threads``);
- ``codecs planned, model on every core``: the plan's decoder and x264 threads, torch's and
  OpenCV's one per core;
- ``unbounded``: what it did before: torch's and OpenCV's default counts (one thread per
  core), FFmpeg's decoder and x264 left to pick (``thread_count=0``, ``threads=0``).

Both reuse one swscale context per stream. Per run: frames/s (wall) and CPU-ms per frame
(the process's CPU time over the frames); medians of the rounds, the ratio of the two, and
the machine's CPU steal over the whole benchmark. On a shared machine, read the ratios.

    python benchmarks/bench_threads.py [--video V] [--times 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import SAMPLES, cpu_times, fmt, machine_facts, make_longer, markdown_table, median, say, steal_percent  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=SAMPLES / "big_buck_bunny.mp4")
    parser.add_argument("--times", type=int, default=2, help="the video remuxed this many times over [2]")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds [3]")
    args = parser.parse_args()

    import cv2
    import torch

    from camvideo import Explainer
    from camvideo.jobs import AnnotateSettings, annotate_video
    from camvideo.jobs.threads import ThreadPlan, plan_threads
    from camvideo.render import Renderer

    facts = machine_facts()
    plan = plan_threads()
    unbounded = ThreadPlan(cores=plan.cores, model=torch.get_num_threads(), decoder=0, encoder=0,
                           opencv=cv2.getNumThreads())  # fmt: skip
    # the codecs bounded as planned, but the model's team on every core
    everycore = ThreadPlan(cores=plan.cores, model=plan.cores, decoder=plan.decoder, encoder=plan.encoder,
                           opencv=plan.cores)  # fmt: skip
    settings = {"plan": plan, "codecs planned, model on every core": everycore, "unbounded": unbounded}
    ex = Explainer(device="cpu")
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in settings}
    steal0 = cpu_times()
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_longer(args.video, clip, args.times)
        for r in range(args.rounds + 1):  # round 0 warms up (first call at a size, file cache)
            order = list(settings) if r % 2 == 0 else list(settings)[::-1]
            for name in order:
                out = Path(tmp) / f"run{list(settings).index(name)}.mp4"
                w0, c0 = time.perf_counter(), time.process_time()
                report = annotate_video(clip, out, ex, Renderer(class_names=ex.class_names),
                                        AnnotateSettings(overwrite=True, threads=settings[name]))  # fmt: skip
                wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                frames = report.stats.frames_written
                if r:
                    results[name].append((frames / wall, 1000 * cpu / frames))
                say(f"round {r} {name}: {frames / wall:.1f} frames/s, {1000 * cpu / frames:.0f} CPU-ms/frame")
    steal = steal_percent(steal0, cpu_times())
    print("### The thread budget: annotate_video with the plan vs every pool unbounded\n")
    print("\n".join(facts))
    print(f"- {args.video.name} x {args.times} ({frames} frames), the default model and settings, {args.rounds} "
          f"interleaved rounds, medians; CPU steal {fmt(steal) if steal is not None else 'n/a'} %")  # fmt: skip
    print(f"- plan: {plan.describe()}; unbounded: torch {unbounded.model}, OpenCV {unbounded.opencv}, decoder and "
          "x264 threads 0 (FFmpeg's and x264's own choice)\n")  # fmt: skip
    base = {k: median([v[k] for v in results["unbounded"]]) for k in (0, 1)}
    rows = []
    for name in settings:
        fps, cpu = median([v[0] for v in results[name]]), median([v[1] for v in results[name]])
        rows.append([name, fmt(fps, 1), fmt(fps / base[0], 2) + "x", fmt(cpu, 0), fmt(cpu / base[1], 2) + "x"])
    print(markdown_table(["threads", "frames/s", "vs unbounded", "CPU-ms/frame", "vs unbounded"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
