"""The annotate pipeline against its own stages and two baselines, in one run.

On the sample video with the default model (EfficientNet-Lite0, method cam, CLI
defaults: smoothing 0.25 s, jet, alpha 0.5, boxes and labels, x264 veryfast crf 23):

* each stage alone, in frames/s: decode (``FileSource`` over the file), engine
  (``FrameAnnotator`` over pre-decoded frames, smoothing on), encode (``Mp4Sink`` over
  pre-rendered frames, with the audio remux ``annotate_video`` does);
* the whole pipeline (``annotate_video`` to a temp file), and its ratio to the slowest
  stage (target >= 0.85);
* two baselines over the same frames, single-threaded Python, batch 1:
  (a) the seeds' sequential recipe: cv2.VideoCapture, the same model and preprocessing,
  CAM in numpy from a forward hook and the top class's fc weights, cv2.resize,
  np.uint8(255 * normalised), cv2.applyColorMap(JET), cv2.addWeighted,
  cv2.VideoWriter(mp4v);
  (b) pytorch-grad-cam (``pip install grad-cam``): ``GradCAM(model, [target layer])`` with
  its default top-1 targets, ``show_cam_on_image`` and cv2.VideoWriter(mp4v);
* flat memory: peak RSS of annotating the sample vs a 4x longer copy (the sample
  remuxed four times, re-timestamped), each in a fresh process.

Every timed run is repeated ``--repeat`` times; the runs are interleaved round-robin
(the order rotating each round) so that noise from other users of the machine hits all
of them; medians are reported. Each run (stage alone, baseline) runs in a fresh worker
thread, as the pipeline's stages do: see ``_common.run_in_thread`` for why it matters.

``--sweep`` instead measures the pipeline (and the stages it depends on) over torch
threads x batch size, then x264 threads x decoder threading, to find the best settings.

    python benchmarks/bench_pipeline.py [--video V] [--batch-size 8] [--repeat 3]
    python benchmarks/bench_pipeline.py --sweep
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import (  # noqa: E402
    SAMPLES,
    cpu_times,
    fmt,
    machine_facts,
    make_longer,
    markdown_table,
    median,
    run_in_thread,
    say,
    steal_percent,
    usable_cpus,
)

import camvideo.jobs.annotate as annotate_mod  # noqa: E402
from camvideo.engine.layers import resolve_module  # noqa: E402
from camvideo.jobs import AnnotateSettings, FrameAnnotator, annotate_video, default_batch_size, warm_up  # noqa: E402  # noqa: E402
from camvideo.render import (
    Renderer,  # noqa: E402
    TemporalSmoother,  # noqa: E402
)
from camvideo.sinks import Mp4Sink  # noqa: E402
from camvideo.sources import FileSource  # noqa: E402

SMOOTH = 0.25  # the CLI default

# -- knobs annotate_video has no option for: torch, x264 and decoder threads -----------------
# annotate_video builds FileSource(path), FrameAnnotator and Mp4Sink(..., threads=0); to try
# other values the benchmark swaps in subclasses whose settings come from KNOBS. With the
# package's defaults they behave exactly like the originals.
#
# torch threads need care: torch.set_num_threads() only sizes the OpenMP team of the
# thread that calls it, and the pipeline's engine runs in a thread of its own, where the
# default team (one per CPU) is used whatever the main thread set (torch.get_num_threads()
# there still reports the main thread's value). So the annotator sets it in its own thread.
DEFAULT_TORCH_THREADS = torch.get_num_threads()
KNOBS: dict = {"decoder": "AUTO", "x264": 0, "torch": None}
_local = threading.local()


def _torch_threads_here() -> None:
    want = KNOBS["torch"] or DEFAULT_TORCH_THREADS
    if getattr(_local, "torch_threads", None) != want:
        torch.set_num_threads(want)
        _local.torch_threads = want


class _Annotator(FrameAnnotator):
    def __call__(self, frames):
        _torch_threads_here()
        return super().__call__(frames)


class _Source(FileSource):
    def __init__(self, path, *, threads: str | None = None, **kwargs) -> None:
        super().__init__(path, threads=threads or KNOBS["decoder"], **kwargs)


class _Sink(Mp4Sink):
    def __init__(self, *args, threads: int | None = None, **kwargs) -> None:
        super().__init__(*args, threads=KNOBS["x264"] if threads is None else threads, **kwargs)


annotate_mod.FileSource = _Source
annotate_mod.Mp4Sink = _Sink
annotate_mod.FrameAnnotator = _Annotator


def set_threads(torch_threads: int | None, x264: int | None = None, decoder: str | None = None) -> None:
    """Set the knobs; torch's in this thread too (the annotator sets it in the engine thread)."""
    if torch_threads:
        KNOBS["torch"] = torch_threads
        _torch_threads_here()
    if x264 is not None:
        KNOBS["x264"] = x264
    if decoder is not None:
        KNOBS["decoder"] = decoder.upper()


# -- the stages alone, the pipeline, the baselines --------------------------------------------
class Bench:
    def __init__(self, video: Path, batch_size: int, workdir: Path) -> None:
        from camvideo import Explainer

        self.video = video
        self.batch_size = batch_size
        self.workdir = workdir
        self.ex = Explainer()
        self.renderer = Renderer(class_names=self.ex.class_names)  # CLI defaults
        with _Source(video) as source:
            self.frames = list(source)
            self.info = source.info
        self.n = len(self.frames)
        self.rendered = None
        warm_up(_Annotator(self.ex, self.renderer, TemporalSmoother(SMOOTH)), self.info.height, self.info.width)
        self.rendered = run_in_thread(lambda: self._annotate_frames(batch_size))  # also a warm-up of the engine stage
        self.last_busy: dict | None = None

    def _annotate_frames(self, batch_size: int) -> list:
        annotator = _Annotator(self.ex, self.renderer, TemporalSmoother(SMOOTH))
        out = []
        for i in range(0, self.n, batch_size):
            out += annotator(self.frames[i : i + batch_size])
        return out

    # each returns the number of frames it handled
    def decode(self) -> int:
        count = 0
        with _Source(self.video) as source:
            for _ in source:
                count += 1
        return count

    def engine(self, batch_size: int | None = None) -> int:
        self.rendered = self._annotate_frames(batch_size or self.batch_size)
        return len(self.rendered)

    def encode(self) -> int:
        sink = _Sink(self.workdir / "encode.mp4", self.info, audio=self.video if self.info.has_audio else None)
        for result in self.rendered:
            sink.encode(result.image, result.frame.pts, result.frame.time)
        sink.close()
        return sink.frames_written

    def pipeline(self, batch_size: int | None = None) -> int:
        settings = AnnotateSettings(smooth=SMOOTH, batch_size=batch_size or self.batch_size, overwrite=True)
        report = annotate_video(self.video, self.workdir / "pipeline.mp4", self.ex, self.renderer, settings)
        self.last_busy = dict(report.stats.busy, wall=report.stats.wall)
        return report.stats.frames_written

    def sequential_recipe(self) -> int:
        """Baseline (a): the seeds' recipe, one frame at a time, all in this thread."""
        ex = self.ex
        cap = cv2.VideoCapture(str(self.video))
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        writer = cv2.VideoWriter(str(self.workdir / "seq.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        features: dict[str, np.ndarray] = {}

        def hook(module, inputs, output) -> None:
            features["a"] = output.detach().cpu().numpy()

        handle = resolve_module(ex.model, ex.target_layer).register_forward_hook(hook)
        fc = resolve_module(ex.model, ex.report.cam_linear).weight.detach().cpu().numpy()  # (classes, K)
        count = 0
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                with torch.no_grad():
                    logits = ex.model(ex.preprocess(rgb))
                top = int(torch.softmax(logits, dim=1)[0].argmax())
                feat = features["a"][0]  # (K, h, w)
                k, h, w = feat.shape
                cam = (fc[top] @ feat.reshape(k, h * w)).reshape(h, w)
                cam = cv2.resize(cam, (width, height))
                cam = cam - cam.min()
                cam = cam / cam.max()
                heat = cv2.applyColorMap(np.uint8(255 * cam), cv2.COLORMAP_JET)
                writer.write(cv2.addWeighted(bgr, 0.5, heat, 0.5, 0))
                count += 1
        finally:
            handle.remove()
            cap.release()
            writer.release()
        return count

    def grad_cam_library(self) -> int:
        """Baseline (b): pytorch-grad-cam's GradCAM + show_cam_on_image, one frame at a time."""
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.image import show_cam_on_image

        ex = self.ex
        cap = cv2.VideoCapture(str(self.video))
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        writer = cv2.VideoWriter(
            str(self.workdir / "gradcam.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height)
        )
        count = 0
        try:
            with GradCAM(model=ex.model, target_layers=[resolve_module(ex.model, ex.target_layer)]) as cam:
                while True:
                    ok, bgr = cap.read()
                    if not ok:
                        break
                    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    grayscale = cam(input_tensor=ex.preprocess(rgb), targets=None)[0]  # top-1, input size
                    grayscale = cv2.resize(grayscale, (width, height))
                    vis = show_cam_on_image(np.float32(rgb) / 255, grayscale, use_rgb=True)
                    writer.write(cv2.cvtColor(vis, cv2.COLOR_RGB2BGR))
                    count += 1
        finally:
            cap.release()
            writer.release()
            ex.model.zero_grad(set_to_none=True)  # GradCAM backpropagates into the weights' .grad
        return count


def _with_torch_threads(fn):
    def run() -> int:
        _torch_threads_here()
        return fn()

    return run


def run_rounds(jobs: dict, repeat: int) -> dict[str, dict]:
    """Run every job ``repeat`` times, round-robin, the order rotating each round.

    Returns per job: median frames/s, min and max frames/s, median CPU cores busy.
    """
    names = list(jobs)
    fps: dict[str, list[float]] = {n: [] for n in names}
    cores: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeat):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            say(f"  round {r + 1}/{repeat}: {name} ...")
            wall0, cpu0 = time.perf_counter(), time.process_time()
            frames = run_in_thread(_with_torch_threads(jobs[name]))
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            fps[name].append(frames / wall)
            cores[name].append(cpu / wall)
    return {n: {"fps": median(fps[n]), "min": min(fps[n]), "max": max(fps[n]), "cores": median(cores[n]),
                "cpu_per_frame": median(cores[n]) / median(fps[n])} for n in names}  # fmt: skip


# -- flat memory ------------------------------------------------------------------------------


def rss_child(video: Path, batch_size: int, mark: int) -> None:
    """In a fresh process: load the model, annotate ``video`` once, print peak RSS as JSON.

    Also the peak when frame ``mark`` was written, so that growth along one run shows too.
    """
    from camvideo import Explainer

    ex = Explainer()
    renderer = Renderer(class_names=ex.class_names)
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up at the video's size so allocator pools exist before the baseline
        with _Source(video) as src:
            annotator = _Annotator(ex, renderer, TemporalSmoother(SMOOTH))
            warm_up(annotator, src.info.height, src.info.width)
        loaded = _current_rss_mib()
        written = [0]
        at_mark = [float("nan")]

        def on_frame(_result) -> None:
            written[0] += 1
            if written[0] == mark:
                at_mark[0] = _peak_rss_mib()

        settings = AnnotateSettings(smooth=SMOOTH, batch_size=batch_size)
        report = annotate_video(video, Path(tmp) / "out.mp4", ex, renderer, settings, on_frame=on_frame)
    print(json.dumps({"frames": report.stats.frames_written, "loaded_mib": loaded, "peak_mib": _peak_rss_mib(),
                      "peak_at_mark_mib": at_mark[0]}))  # fmt: skip


def _status_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _current_rss_mib() -> float:
    value = _status_mib("VmRSS")
    return float("nan") if value is None else value


def _peak_rss_mib() -> float:
    """This process's peak RSS: VmHWM, the high-water mark of its own address space.

    Not ``getrusage().ru_maxrss``: Linux carries the pre-exec address space's peak into
    it, and Python's subprocess (vfork) makes that the *parent's* peak, so a child
    started by a 2.6 GiB parent reports 2.6 GiB whatever it does.
    """
    value = _status_mib("VmHWM")
    return value if value is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_check(video: Path, workdir: Path, args: argparse.Namespace, frames: int) -> list[dict]:
    longer = workdir / f"{video.stem}.x4.mp4"
    make_longer(video, longer, 4)
    results = []
    for path in (video, longer):
        say(f"  peak RSS of annotating {path.name} in a fresh process ...")
        cmd = [
            sys.executable,
            __file__,
            "--_rss-child",
            str(path),
            "--_rss-mark",
            str(frames),
            "--batch-size",
            str(args.batch_size),
        ]
        for flag, value in (("--torch-threads", args.torch_threads), ("--x264-threads", args.x264_threads),
                            ("--decoder-threads", args.decoder_threads)):  # fmt: skip
            if value is not None:
                cmd += [flag, str(value)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]) | {"name": path.name})
    return results


# -- reports ----------------------------------------------------------------------------------
def threads_line(args: argparse.Namespace) -> str:
    return (f"torch intra-op threads {KNOBS['torch'] or DEFAULT_TORCH_THREADS} (set in each worker thread), x264 threads {KNOBS['x264'] or 'auto (0)'}, "
            f"decoder threading {KNOBS['decoder']}, batch size {args.batch_size}")  # fmt: skip


def main_report(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="camvideo-bench-") as tmp:
        workdir = Path(tmp)
        say("loading the model, decoding and rendering the frames once ...")
        bench = Bench(args.video, args.batch_size, workdir)
        jobs = {"decode": bench.decode, "engine": bench.engine, "encode": bench.encode, "pipeline": bench.pipeline}
        busy: list[dict] = []

        def pipeline() -> int:
            n = bench.pipeline()
            busy.append(bench.last_busy)
            return n

        jobs["pipeline"] = pipeline
        have_gradcam = True
        if not args.no_baselines:
            jobs["seq"] = bench.sequential_recipe
            try:
                import pytorch_grad_cam  # noqa: F401

                jobs["gradcam"] = bench.grad_cam_library
            except ImportError:
                have_gradcam = False
        times = cpu_times()
        r = run_rounds(jobs, args.repeat)
        steal = steal_percent(times, cpu_times())
        mem = [] if args.no_memory else memory_check(args.video, workdir, args, bench.n)

    stages = ("decode", "engine", "encode")
    slowest = min(stages, key=lambda s: r[s]["fps"])
    ratio = r["pipeline"]["fps"] / r[slowest]["fps"]
    cpu_sum = sum(r[s]["cpu_per_frame"] for s in stages)
    ceiling = usable_cpus() / cpu_sum

    info = bench.info
    print(f"### Pipeline vs its stages and baselines ({args.video.name}, {info.width}x{info.height}, "
          f"{bench.n} frames, {'with' if info.has_audio else 'no'} audio)")  # fmt: skip
    print()
    for line in machine_facts():
        print(line)
    print(f"- model: {bench.ex.spec.name}, method cam, smoothing {SMOOTH} s, CLI render defaults; x264 veryfast crf 23")
    print(f"- settings: {threads_line(args)}; {args.repeat} interleaved rounds, medians")
    if steal is not None:
        print(f"- CPU time stolen by the hypervisor (other virtual machines) during the timed rounds: {steal:.0f} % "
              "(above a few %, this machine did not have its 2 cores and the figures say little)")  # fmt: skip
    print()
    what = {
        "decode": "FileSource over the file",
        "engine": f"FrameAnnotator over pre-decoded frames, batch {args.batch_size}, smoothing on",
        "encode": "Mp4Sink over pre-rendered frames, audio remuxed",
        "pipeline": f"annotate_video to a temp file (batch {args.batch_size})",
        "seq": "baseline (a): seeds' sequential recipe (cv2 decode, batch 1, numpy CAM, cv2 overlay, mp4v)",
        "gradcam": "baseline (b): pytorch-grad-cam GradCAM + show_cam_on_image, batch 1, cv2 mp4v",
    }
    rows = []
    for name in ("decode", "engine", "encode", "pipeline", "seq", "gradcam"):
        if name not in r:
            continue
        x = r[name]
        speedup = f"{r['pipeline']['fps'] / x['fps']:.2f}x" if name in ("seq", "gradcam") else "-"
        rows.append([name, what[name], fmt(x["fps"]), f"{fmt(x['min'])}-{fmt(x['max'])}", f"{x['cores']:.2f}",
                     f"{1000 * x['cpu_per_frame']:.0f}", speedup])  # fmt: skip
    print(markdown_table(["run", "what", "frames/s", "min-max", "CPU cores busy", "CPU ms/frame",
                          "pipeline speed-up over it"], rows, align=["l", "l", "r", "r", "r", "r", "r"]))  # fmt: skip
    print()
    verdict = "PASS" if ratio >= 0.85 else "FAIL"
    print(f"- pipeline / slowest stage ({slowest}): **{ratio:.2f}** -> {verdict} (target >= 0.85)")
    print(f"- CPU budget: the three stages alone take {1000 * cpu_sum:.0f} CPU ms per frame together; on "
          f"{usable_cpus()} fully free cores that allows at most ~{ceiling:.1f} frames/s = ~{ceiling / r[slowest]['fps']:.2f}x "
          f"the slowest stage alone (rough: spinning OpenMP/x264 threads inflate CPU time; when other users take "
          f"cores, 'CPU cores busy' above shows what this process got)")  # fmt: skip
    if busy:
        b = {k: median([d[k] for d in busy]) for k in busy[0]}
        print(f"- inside the pipeline (median busy seconds per stage thread): source {b['source']:.1f}, "
              f"engine {b['engine']:.1f}, sink {b['sink']:.1f}, wall {b['wall']:.1f}")  # fmt: skip
    if "seq" in r:
        faster = r["pipeline"]["fps"] > r["seq"]["fps"]
        print(f"- pipeline faster than the sequential recipe: {'PASS' if faster else 'FAIL'} "
              f"({r['pipeline']['fps'] / r['seq']['fps']:.2f}x)")  # fmt: skip
    if not have_gradcam:
        print("- baseline (b) skipped: pytorch-grad-cam is not installed (`pip install --no-deps grad-cam ttach`)")
    if mem:
        print()
        a, b = mem
        growth = b["peak_mib"] - a["peak_mib"]
        along = b["peak_mib"] - b["peak_at_mark_mib"]
        allowed = max(128.0, 0.10 * a["peak_mib"])
        flat = growth <= allowed
        held = (b["frames"] - a["frames"]) * info.width * info.height * 3 / 2**20
        print(markdown_table(
            ["input", "frames", "RSS after model load + warm-up (MiB)", f"peak RSS at frame {bench.n} (MiB)",
             "peak RSS, whole run (MiB)"],
            [[m["name"], m["frames"], f"{m['loaded_mib']:.0f}", f"{m['peak_at_mark_mib']:.0f}", f"{m['peak_mib']:.0f}"]
             for m in mem],
        ))  # fmt: skip
        print()
        print(f"- flat memory: 4x the frames -> peak RSS {growth:+.0f} MiB ({100 * growth / a['peak_mib']:+.1f} %) "
              f"across the two runs ({along:+.0f} MiB from frame {bench.n} to the end of the long run) -> "
              f"{'PASS' if flat else 'FAIL'} (allowed: +{allowed:.0f} MiB; holding the {b['frames'] - a['frames']} extra "
              f"decoded frames would take +{held:.0f} MiB). Peaks are each process's VmHWM; they vary by ~100 MiB from "
              "run to run with thread timing (allocator), and level off along a run")  # fmt: skip


def sweep_report(args: argparse.Namespace) -> None:
    """Phase 1: torch threads x batch size. Phase 2 (best of phase 1): x264 threads x decoder threading."""
    torch_threads = [int(v) for v in args.sweep_torch_threads.split(",")]
    batches = [int(v) for v in args.sweep_batches.split(",")]
    x264s = [int(v) for v in args.sweep_x264_threads.split(",")]
    decoders = [v.strip().upper() for v in args.sweep_decoder.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="camvideo-bench-") as tmp:
        bench = Bench(args.video, 8, Path(tmp))
        default_threads = torch.get_num_threads()

        def with_knobs(fn, t, x264=0, decoder="AUTO"):
            def run() -> int:
                set_threads(t, x264, decoder)
                return fn()

            return run

        say("phase 1: torch threads x batch size (x264 auto, decoder AUTO)")
        jobs = {}
        for t in torch_threads:
            for bs in batches:
                jobs[f"engine T{t} B{bs}"] = with_knobs(lambda bs=bs: bench.engine(bs), t, 0, "AUTO")
                jobs[f"pipeline T{t} B{bs}"] = with_knobs(lambda bs=bs: bench.pipeline(bs), t, 0, "AUTO")
        jobs["decode AUTO"] = with_knobs(bench.decode, default_threads, 0, "AUTO")
        jobs["encode x264 0"] = with_knobs(bench.encode, default_threads, 0, "AUTO")
        r1 = run_rounds(jobs, args.repeat)
        best = max(
            ((t, bs) for t in torch_threads for bs in batches), key=lambda c: r1[f"pipeline T{c[0]} B{c[1]}"]["fps"]
        )
        for t in torch_threads:
            for bs in batches:
                p, e = r1[f"pipeline T{t} B{bs}"], r1[f"engine T{t} B{bs}"]
                slow = min(e["fps"], r1["decode AUTO"]["fps"], r1["encode x264 0"]["fps"])
                rows.append([t, bs, "auto", "AUTO", fmt(e["fps"]), fmt(r1["encode x264 0"]["fps"]),
                             fmt(r1["decode AUTO"]["fps"], 0), f"**{fmt(p['fps'])}**", f"{p['min']:.1f}-{p['max']:.1f}",
                             f"{p['fps'] / slow:.2f}", f"{1000 * p['cpu_per_frame']:.0f}"])  # fmt: skip

        t, bs = best
        say(f"phase 2: x264 threads x decoder threading at torch threads {t}, batch {bs}")
        jobs = {}
        for x in x264s:
            jobs[f"encode {x}"] = with_knobs(bench.encode, t, x, "AUTO")
        for d in decoders:
            jobs[f"decode {d}"] = with_knobs(bench.decode, t, 0, d)
        jobs["engine"] = with_knobs(lambda: bench.engine(bs), t, 0, "AUTO")
        for x in x264s:
            for d in decoders:
                jobs[f"pipeline {x} {d}"] = with_knobs(lambda: bench.pipeline(bs), t, x, d)
        r2 = run_rounds(jobs, args.repeat)
        for x in x264s:
            for d in decoders:
                p = r2[f"pipeline {x} {d}"]
                slow = min(r2["engine"]["fps"], r2[f"encode {x}"]["fps"], r2[f"decode {d}"]["fps"])
                rows.append([t, bs, x or "auto", d, fmt(r2["engine"]["fps"]), fmt(r2[f"encode {x}"]["fps"]),
                             fmt(r2[f"decode {d}"]["fps"], 0), f"**{fmt(p['fps'])}**", f"{p['min']:.1f}-{p['max']:.1f}",
                             f"{p['fps'] / slow:.2f}", f"{1000 * p['cpu_per_frame']:.0f}"])  # fmt: skip
    print(f"### Pipeline settings sweep ({args.video.name}, {bench.n} frames)")
    print()
    for line in machine_facts():
        print(line)
    print(f"- {args.repeat} interleaved rounds per phase, medians; first rows: torch threads x batch (x264 auto, "
          f"decoder AUTO); last rows: x264 threads x decoder threading at the best of those")  # fmt: skip
    print()
    print(markdown_table(["torch threads", "batch", "x264 threads", "decoder", "engine alone (f/s)", "encode alone (f/s)",
                          "decode alone (f/s)", "pipeline (f/s)", "pipeline min-max", "pipeline / slowest",
                          "pipeline CPU ms/frame"], rows, align=["r"] * 11))  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=SAMPLES / "big_buck_bunny.mp4")
    parser.add_argument(
        "--batch-size", type=int, default=default_batch_size("cpu"), help="[%(default)s, the CLI default on the CPU]"
    )
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds [%(default)s]")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch intra-op threads [torch's default]")
    parser.add_argument("--x264-threads", type=int, default=None, help="x264 threads, 0 = auto [package default: 0]")
    parser.add_argument("--decoder-threads", default=None, choices=("AUTO", "FRAME", "SLICE", "NONE"),
                        help="FileSource decoder threading [package default: AUTO]")  # fmt: skip
    parser.add_argument("--no-baselines", action="store_true", help="skip the two baselines")
    parser.add_argument("--no-memory", action="store_true", help="skip the flat-memory check")
    parser.add_argument("--sweep", action="store_true", help="sweep thread and batch settings instead")
    parser.add_argument("--sweep-torch-threads", default="1,2")
    parser.add_argument("--sweep-batches", default="1,2,8")
    parser.add_argument("--sweep-x264-threads", default="0,1")
    parser.add_argument("--sweep-decoder", default="AUTO,NONE")
    parser.add_argument("--_rss-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_rss-mark", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    set_threads(args.torch_threads, args.x264_threads, args.decoder_threads)
    if args._rss_child is not None:
        rss_child(args._rss_child, args.batch_size, args._rss_mark)
    elif args.sweep:
        sweep_report(args)
    else:
        main_report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
