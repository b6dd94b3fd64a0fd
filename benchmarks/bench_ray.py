"""Ray against --jobs on this machine: a folder, Ray's overhead per video, start-up, a long clip.

    python benchmarks/bench_ray.py [--rounds 2] [--clips 4] [--frames 30] [--long-seconds 8]

Prints Markdown tables:

1. the local cluster's start-up (ray.init of a 2-CPU cluster on 127.0.0.1, and shutdown);
2. a folder of clips cut from the cat sample: `annotate --jobs 1`, `--jobs 2` and `--ray`
   (2 workers on the local cluster), in interleaved rounds, as wall time and ratios;
3. Ray's overhead per video: folders of 2 and 10 two-frame clips (nearly no work) with
   `--jobs 1` and `--ray --ray-workers 1`: the slope of wall time over videos is the cost
   per video, the intercept the fixed cost of a run;
4. one long clip on Ray, whole (`--segment-seconds 0`) and in 2 s segments, with the default
   smoothing (each segment warms up on the 4 s before it) and without (no warm-up).

Every `--ray` run joins the cluster started once for the benchmark, so cluster start-up is
in table 1 only; each run still starts its worker actors and loads the model in each
(that is in the figures, as it is in every real run). Two cores are shared by everything
here: the figures say what Ray costs on a small machine, not how it scales on a cluster.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SAMPLES, cpu_times, fmt, machine_facts, markdown_table, median, say, steal_percent  # noqa: E402


def cut_clips(folder: Path, count: int, frames: int, size: tuple[int, int]) -> list[Path]:
    """``count`` clips of ``frames`` frames from the cat sample (looped), resized."""
    import cv2

    from camvideo.sinks import Mp4Sink
    from camvideo.sources import FileSource
    from camvideo.types import Frame, FrameResult

    folder.mkdir(parents=True, exist_ok=True)
    with FileSource(SAMPLES / "cat_and_coffee.mp4") as source:
        images = [cv2.resize(f.image, size, interpolation=cv2.INTER_AREA) for f in source]
        info = source.info
    paths = []
    for k in range(count):
        path = folder / f"clip{k:03d}.mp4"
        with Mp4Sink(path, info) as sink:
            for i in range(frames):
                image = images[(k * frames + i) % len(images)]
                frame = Frame(i, image, i * 512, i / 30)
                sink.write(FrameResult(frame, image, [0], [1.0], None, []))
        paths.append(path)
    return paths


def long_clip(path: Path, seconds: float, size: tuple[int, int]) -> Path:
    """The cat sample looped to ``seconds`` at 30 fps, a keyframe every second, with AAC audio."""
    import av
    import cv2
    import numpy as np

    from camvideo.sources import FileSource

    with FileSource(SAMPLES / "cat_and_coffee.mp4") as source:
        images = [cv2.resize(f.image, size, interpolation=cv2.INTER_AREA) for f in source]
    n = int(seconds * 30)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = *size, "yuv420p"
        video.codec_context.options = {"preset": "veryfast", "g": "30", "keyint_min": "30", "sc_threshold": "0"}
        audio = out.add_stream("aac", rate=16000)
        audio.layout = "mono"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(images[i % len(images)], format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        for i in range(int(seconds * 16000 / 1024) + 1):
            samples = (0.2 * np.sin(np.arange(1024) * 0.03 + i)).astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            out.mux(audio.encode(frame))
        out.mux(video.encode())
        out.mux(audio.encode())
    return path


def annotate(args: list[str]) -> float:
    """Wall seconds of one in-process `camvideo annotate` run (which must succeed)."""
    from camvideo.cli import main

    started = time.perf_counter()
    code = main(["annotate", *args, "--quiet", "--overwrite"])
    if code != 0:
        raise SystemExit(f"camvideo annotate {' '.join(args)} exited {code}")
    return time.perf_counter() - started


def annotate_apart(args: list[str]) -> float:
    """Wall seconds of `camvideo annotate` in a subprocess with torch on one thread."""
    import subprocess

    args = [a for a in args if a != "<subprocess>"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "camvideo.cli", "annotate", *args, "--quiet", "--overwrite"], env=env,
                   check=True)  # fmt: skip
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clips", type=int, default=4, help="clips in the folder")
    parser.add_argument("--frames", type=int, default=30, help="frames per clip")
    parser.add_argument("--tiny", type=int, default=8, help="extra 2-frame clips in the overhead table's second folder")
    parser.add_argument("--long-seconds", type=float, default=8.0)
    opts = parser.parse_args()
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    from camvideo.distributed import ray_cluster

    work = Path(tempfile.mkdtemp(prefix="bench_ray-"))
    size = (320, 180)
    say("making clips in", work)
    folder = work / "folder"
    cut_clips(folder, opts.clips, opts.frames, size)
    tiny = work / "tiny"
    long = long_clip(work / "long.mp4", opts.long_seconds, size)
    print("#### Ray vs --jobs on this machine (`python benchmarks/bench_ray.py`)\n")
    print("\n".join(machine_facts()))
    print(f"- ray {ray.__version__}; local cluster: 2 CPUs, 127.0.0.1, no dashboard; worker actors: 1 CPU and "
          f"1 torch thread each; model efficientnet_lite0, CPU, batch 2, smoothing 0.25 s, x264 veryfast crf 23")  # fmt: skip
    print(
        f"- clips cut from cat_and_coffee.mp4, {size[0]}x{size[1]}, 30 fps; {opts.rounds} interleaved rounds, medians\n"
    )

    # 1. start-up
    startups, shutdowns = [], []
    for _ in range(opts.rounds):
        t0 = time.perf_counter()
        with ray_cluster(num_cpus=2):
            t1 = time.perf_counter()
        shutdowns.append(time.perf_counter() - t1)
        startups.append(t1 - t0)
    print(markdown_table(["local cluster", "seconds (median)", "min-max"], [
        ["ray.init (start, 2 CPUs, 127.0.0.1)", fmt(median(startups)), f"{fmt(min(startups))}-{fmt(max(startups))}"],
        ["ray.shutdown", fmt(median(shutdowns)), f"{fmt(min(shutdowns))}-{fmt(max(shutdowns))}"],
    ]))  # fmt: skip
    print()

    steal0 = cpu_times()
    with ray_cluster(num_cpus=2):
        address = ray.get_runtime_context().gcs_address
        out = work / "out"
        frames = opts.clips * opts.frames
        runs = {"--jobs 1": ["--jobs", "1"], "--jobs 2": ["--jobs", "2"], "--ray (2 workers)": ["--ray", address]}
        walls: dict[str, list[float]] = {name: [] for name in runs}
        for r in range(opts.rounds):
            for name, extra in runs.items():
                say(f"round {r + 1}: folder {name}")
                walls[name].append(annotate([str(folder), "-o", str(out), *extra]))
        base = median(walls["--jobs 1"])
        rows = [[name, fmt(median(w)), f"{fmt(min(w))}-{fmt(max(w))}", fmt(frames / median(w)),
                 f"{base / median(w):.2f}x"] for name, w in walls.items()]  # fmt: skip
        print(f"Folder: {opts.clips} clips x {opts.frames} frames ({frames} frames), model loading included\n")
        print(markdown_table(["run", "wall s", "min-max", "frames/s", "speed vs --jobs 1"], rows))
        print()

        # 3. overhead per video: the slope of wall time over the number of (tiny) videos
        counts = (2, 2 + opts.tiny)
        for n in counts:
            cut_clips(tiny / str(n), n, 2, size)
        tiny_runs = {
            "--jobs 1": ["--jobs", "1"],
            "--jobs 1, one torch thread (a subprocess, OMP_NUM_THREADS=1)": ["--jobs", "1", "<subprocess>"],
            "--ray --ray-workers 1 (one CPU: one torch thread)": ["--ray", address, "--ray-workers", "1"],
        }
        tiny_walls: dict[tuple[str, int], list[float]] = {(name, n): [] for name in tiny_runs for n in counts}
        for r in range(opts.rounds):
            for name, extra in tiny_runs.items():
                for n in counts:
                    say(f"round {r + 1}: {n} tiny clips {name}")
                    args = [str(tiny / str(n)), "-o", str(out / "tiny"), *extra]
                    tiny_walls[name, n].append(annotate_apart(args) if "<subprocess>" in args else annotate(args))
        rows, slopes, fixed = [], {}, {}
        for name in tiny_runs:
            w = [median(tiny_walls[name, n]) for n in counts]
            slopes[name] = (w[1] - w[0]) / (counts[1] - counts[0])
            fixed[name] = w[0] - counts[0] * slopes[name]
            rows.append([name, *(fmt(x) for x in w), fmt(slopes[name] * 1000, 0), fmt(fixed[name])])
        print(f"Overhead: folders of {counts[0]} and {counts[1]} clips of 2 frames each (nearly no work), one worker\n")
        print(markdown_table(["run", f"wall s, {counts[0]} clips", f"wall s, {counts[1]} clips", "ms per video (slope)",
                              "fixed s (intercept)"], rows))  # fmt: skip
        local, one, on_ray = list(tiny_runs)
        print(
            f"\n- Ray's overhead per video: {fmt((slopes[on_ray] - slopes[one]) * 1000, 0)} ms against a local run "
            f"on one torch thread as the worker has ({fmt((slopes[on_ray] - slopes[local]) * 1000, 0)} ms against "
            f"the default two); per run: {fmt(fixed[on_ray] - fixed[local])} s more than in-process locally (the "
            "worker actor's process start, its imports and model load, against the local model load; the "
            "cluster's own start-up is in the first table; the subprocess row's intercept includes Python's start "
            "and imports)\n"
        )

        # 4. long clip
        long_runs = {
            "whole, --smooth 0.25": ["--segment-seconds", "0"],
            "2 s segments, --smooth 0.25 (4 s warm-up each)": ["--segment-seconds", "2"],
            "whole, --smooth 0": ["--segment-seconds", "0", "--smooth", "0"],
            "2 s segments, --smooth 0 (no warm-up)": ["--segment-seconds", "2", "--smooth", "0"],
        }
        long_walls: dict[str, list[float]] = {name: [] for name in long_runs}
        n_long = int(opts.long_seconds * 30)
        for r in range(opts.rounds):
            for name, extra in long_runs.items():
                say(f"round {r + 1}: long clip {name}")
                long_walls[name].append(
                    annotate([str(long), "-o", str(out / "long.cam.mp4"), "--ray", address, *extra])
                )
        print(
            f"One long clip: {opts.long_seconds:g} s, {n_long} frames, a keyframe every second, AAC audio; "
            "--ray, 2 workers\n"
        )
        rows = []
        for name, w in long_walls.items():
            whole = median(long_walls["whole, --smooth 0" if "--smooth 0 " in f"{name} " else "whole, --smooth 0.25"])
            rows.append(
                [
                    name,
                    fmt(median(w)),
                    f"{fmt(min(w))}-{fmt(max(w))}",
                    fmt(n_long / median(w)),
                    f"{whole / median(w):.2f}x",
                ]
            )
        print(markdown_table(["run", "wall s", "min-max", "frames/s", "speed vs whole (same smoothing)"], rows))
    steal = steal_percent(steal0, cpu_times())
    print(
        f"\n- CPU steal during the runs: {fmt(steal) if steal is not None else 'n/a'} %; "
        f"load average at the end: {' / '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
