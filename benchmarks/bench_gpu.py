"""The GPU path: decode, engine, encode and the annotate pipeline on a 1080p clip, one video and several.

The clip: ``sample_videos/big_buck_bunny.mp4`` (1280x720, 132 frames) decoded with
``FileSource``, scaled to ``--height`` (16:9, ``cv2.resize``), looped to ``--frames``
frames with continuing timestamps and encoded with ``Mp4Sink`` (libx264 veryfast, crf
23, no audio) into a temp folder; ``--videos`` copies of it make the folder run's input.
On it, in frames/s (medians over ``--repeat`` interleaved rounds, each run in a fresh
worker thread as the pipeline runs its stages, see ``_common.run_in_thread``; CUDA is
synchronised before and after every timing):

* decode only: ``FileSource`` over the clip, in software and, where ``--hwaccel``
  resolves to cuda (as the CLI decides, ``camvideo.jobs.resolve_hwaccel``: auto = cuda on a
  CUDA device when PyAV can decode on it), ``FileSource(path, hwaccel="cuda")``; the
  decoder really used (``source.decoder``, ``source.hwaccel``: None when it fell back)
  is reported;
* engine only, per method and batch size (``--methods`` x ``--batches``), on
  pre-decoded frames: the model's forward alone (``ex.preprocess`` once, then
  ``ex.model(x)`` under ``torch.inference_mode``), forward + map (``ex.explain`` on the
  same preprocessed batch) and the full engine stage (``FrameAnnotator(explainer,
  renderer, None)`` on the uint8 frames: upload, preprocess, model, map, overlay, box and
  label, download), and their ratios to the forward alone; target: ``cam`` at batch 32
  within 10 % of the forward (>= 0.9x), checked for forward + map and for the full stage.
  Each run covers the same ``--engine-frames`` frames (at most 16 calls, whole batches),
  after two warm-up calls of each kind at that shape;
* encode only: ``Mp4Sink(..., encoder=--encoder)`` over pre-rendered frames (the encoder
  really used, ``sink.encoder``, is reported);
* the pipeline on one video: ``annotate_video`` at each ``--pipeline-batches`` (default
  model, method cam, CLI render defaults, smoothing ``--smooth``, the same decoder and
  ``--encoder``; ``AnnotateReport.decoder``/``encoder`` reported), frames / wall, and
  its ratio to the slowest of its own stages measured beside it (decode, the engine
  stage at that batch with the same smoothing, encode); target >= 0.85;
* the folder: ``annotate_many`` over ``--videos`` copies with ``jobs=--videos``, total
  frames / wall, beside the machine's codec capacity: as many decode -> encode passes at
  once (``Pipeline(FileSource, identity, Mp4Sink)`` in as many Python threads), no
  model, the same decoder and encoder; target: folder >= 0.8x capacity.

The report (Markdown, stdout) starts with the device, the versions and the command;
each section is printed as soon as it is measured, so a run cut short keeps what it
measured. Progress goes to stderr. The exit status is 0 even when a target is missed
(it is a report), 1 when something failed to run (the report says what).

The defaults should take 5-7 minutes on a 16-core CUDA machine (H100/H200; estimated, the
progress lines on stderr show the time so far; ``--methods cam,gradcam`` shortens the
engine-only part, which is about a third of it). On a CPU, small settings:

    python benchmarks/bench_gpu.py [--device auto] [--frames 576] [--height 1080] [--batches 1,8,32,64]
        [--methods cam,gradcam,...] [--videos 4] [--precision fp32] [--repeat 3] [--encoder auto] [--hwaccel auto]
    python benchmarks/bench_gpu.py --device cpu --frames 24 --batches 1,8 --methods cam --videos 2 --height 360 --repeat 1
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The checkout's own camvideo, not an older installed copy (``pip install .`` copies it).
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import SAMPLES, fmt, machine_facts, markdown_table, median, run_in_thread, say  # noqa: E402

import camvideo  # noqa: E402
from camvideo import Explainer, Renderer  # noqa: E402
from camvideo.engine.explainer import resolve_device  # noqa: E402
from camvideo.jobs import (  # noqa: E402
    AnnotateReport,
    AnnotateSettings,
    FrameAnnotator,  # noqa: E402
    VideoJob,
    annotate_many,
    annotate_video,
    default_batch_size,
    resolve_hwaccel,
)
from camvideo.pipeline import Pipeline  # noqa: E402
from camvideo.render import TemporalSmoother  # noqa: E402
from camvideo.sinks import (
    Mp4Sink,  # noqa: E402
    choose_encoder,  # noqa: E402
)
from camvideo.sources import FileSource  # noqa: E402
from camvideo.types import Frame, VideoInfo  # noqa: E402

FAST_METHODS = ("cam", "gradcam", "hirescam", "gradcam++", "layercam", "eigencam")
ENGINE_TARGET = ("cam", 32, 0.9)  # method, batch, engine fps >= 0.9 x forward-only fps
PIPELINE_TARGET = 0.85  # one video: pipeline >= 0.85 x its slowest stage
FOLDER_TARGET = 0.8  # folder run >= 0.8 x codec capacity
CRF, PRESET = 23, "veryfast"

_T0 = time.perf_counter()


def step(message: str) -> None:
    """Progress on stderr with the time since the start (the GPU session is short)."""
    say(f"[{time.perf_counter() - _T0:5.0f} s] {message}")


def error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def verdict(ratio: float, target: float) -> str:
    return "PASS" if ratio >= target else "FAIL"


def decoder_label(decoder: str) -> str:
    """``FileSource.decoder`` with the software case said: "h264 (software)" beside "h264 (cuda)"."""
    return decoder if "(" in decoder else f"{decoder} (software)"


def report_codecs(report: AnnotateReport) -> str:
    return f"{decoder_label(report.decoder)} -> {report.encoder}"


# -- the clip -------------------------------------------------------------------------------------
def make_clip(path: Path, frames: int, height: int) -> None:
    """The sample scaled to ``height`` (16:9), looped to ``frames`` frames, libx264 veryfast, no audio."""
    width = round(height * 16 / 9 / 2) * 2
    height += height % 2
    with FileSource(SAMPLES / "big_buck_bunny.mp4") as source:
        info = source.info
        base = [cv2.resize(f.image, (width, height), interpolation=cv2.INTER_LINEAR) for f in source]
    ticks = round(1 / (Fraction(info.fps).limit_denominator(1_001_000) * info.time_base))  # per frame
    clip = VideoInfo(width=width, height=height, fps=info.fps, time_base=info.time_base, frame_count=frames,
                     duration=frames / info.fps, codec="h264", name=path.name)  # fmt: skip
    with Mp4Sink(path, clip, crf=CRF, preset=PRESET, encoder="libx264") as sink:
        for i in range(frames):
            pts = i * ticks
            sink.encode(base[i % len(base)], pts, float(pts * info.time_base))


# -- timing ---------------------------------------------------------------------------------------
def run_rounds(
    jobs: dict[str, Callable[[], tuple[int, str]]], repeat: int, sync: Callable[[], None]
) -> dict[str, dict]:
    """Run every job ``repeat`` times, round-robin, the order rotating each round, each in a
    fresh thread. A job returns the frames it handled and the codecs it used. A job that
    raises is reported (``error``) and not run again; the others go on.

    Per job: median, min and max frames/s, median CPU cores busy (process CPU / wall), the
    codecs used in any round.
    """
    names = list(jobs)
    samples: dict[str, list[tuple[float, float, str]]] = {n: [] for n in names}  # (frames/s, cores, codecs)
    errors: dict[str, str] = {}
    for r in range(repeat):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if name in errors:
                continue
            step(f"  round {r + 1}/{repeat}: {name} ...")

            def job(fn=jobs[name]) -> tuple[int, str, float, float]:
                sync()
                wall0, cpu0 = time.perf_counter(), time.process_time()
                frames, codecs = fn()
                sync()
                return frames, codecs, time.perf_counter() - wall0, time.process_time() - cpu0

            try:
                frames, codecs, wall, cpu = run_in_thread(job)
            except Exception as err:  # noqa: BLE001 - reported, the other jobs go on
                errors[name] = error_text(err)
                say(f"  {name} failed:\n{traceback.format_exc()}")
                continue
            samples[name].append((frames / wall, cpu / wall, codecs))
    out = {}
    for n in names:
        if n in errors:
            out[n] = {"error": errors[n]}
            continue
        fps, cores, codecs = zip(*samples[n])
        out[n] = {"fps": median(fps), "min": min(fps), "max": max(fps), "cores": median(cores),
                  "used": ", ".join(sorted(set(codecs)))}  # fmt: skip
    return out


# -- engine only ----------------------------------------------------------------------------------
def measure_engine(ex: Explainer, renderer: Renderer, frames: list[Frame], batch: int, repeat: int,
                   sync: Callable[[], None]) -> dict:  # fmt: skip
    """Forward only, forward + map and the full engine stage on the same frames, interleaved.

    ``frames`` is a whole number of batches. Runs in a worker thread (the caller's job).
    """
    chunks = [frames[i : i + batch] for i in range(0, len(frames), batch)]
    xs = [ex.preprocess(np.stack([f.image for f in chunk])) for chunk in chunks]
    annotator = FrameAnnotator(ex, renderer, None)

    def forward(items=xs) -> None:
        with torch.inference_mode():
            for x in items:
                ex.model(x)
        sync()

    def explain(items=xs) -> None:
        for x in items:
            ex.explain(x)
        sync()

    def stage(items=chunks) -> None:
        for chunk in items:
            annotator(chunk)
        sync()

    for _ in range(2):  # warm-up at this shape: allocations, cuDNN's algorithm search, kernels
        forward(xs[:1])
        explain(xs[:1])
        stage(chunks[:1])
    runs = {"fwd": forward, "map": explain, "stage": stage}
    times: dict[str, list[float]] = {k: [] for k in runs}
    ratio_map, ratio_stage = [], []
    names = list(runs)
    for rep in range(repeat):
        for name in names[rep % 3 :] + names[: rep % 3]:
            sync()
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
        ratio_map.append(times["fwd"][-1] / times["map"][-1])  # throughput ratio: map fps / forward fps
        ratio_stage.append(times["fwd"][-1] / times["stage"][-1])
    n = len(frames)
    return {
        "fwd": n / median(times["fwd"]), "map": n / median(times["map"]), "stage": n / median(times["stage"]),
        "ratio_map": median(ratio_map), "ratio_stage": median(ratio_stage),
        "stage_range": (min(ratio_stage), max(ratio_stage)), "calls": len(chunks),
    }  # fmt: skip


# -- the benchmark --------------------------------------------------------------------------------
class Bench:
    """The model, the clip (made in ``workdir``) and the chosen codecs; the jobs the sections time; their results."""

    def __init__(self, args: argparse.Namespace, ex: Explainer, workdir: Path) -> None:
        self.args, self.ex, self.workdir = args, ex, workdir
        self.device = ex.device
        self.renderer = Renderer(class_names=ex.class_names)  # CLI defaults: jet, alpha 0.5, boxes, labels
        self.sync = (lambda: torch.cuda.synchronize(self.device)) if self.device.type == "cuda" else (lambda: None)
        self.hwaccel = resolve_hwaccel(args.hwaccel, self.device.type == "cuda")  # the CLI's choice of decoder
        self.rendered: list = []  # (image, pts, seconds) for the encode-only runs
        self.skipped: list[str] = []
        self.failures: list[str] = []
        self.engine: dict = {}  # (method, batch) -> measure_engine's result
        self.pipeline_verdicts: list[str] = []
        self.folder_verdict = "- folder run vs codec capacity: not measured"

        self.clip = workdir / "clip.mp4"
        step(f"making the clip: {args.frames} frames at {args.height}p ...")
        w0 = time.perf_counter()
        make_clip(self.clip, args.frames, args.height)
        self.made_in = time.perf_counter() - w0
        for folder in ("in", "out", "capacity"):
            (self.workdir / folder).mkdir()
        self.inputs = [self.workdir / "in" / f"clip{i:02d}.mp4" for i in range(args.videos)]
        for path in self.inputs:
            shutil.copyfile(self.clip, path)
        step("decoding the clip into memory ...")
        with FileSource(self.clip) as source:
            self.frames, self.info = list(source), source.info
        if not self.hwaccel and args.hwaccel == "auto" and self.device.type != "cuda":
            self.skipped.append(f"hardware decoding: --hwaccel auto on a {self.device.type} device")
        elif not self.hwaccel and args.hwaccel != "none":
            self.skipped.append("hardware decoding: this PyAV build has no CUDA decoding")
        if args.encoder != "libx264":
            got = choose_encoder(args.encoder, self.info.width, self.info.height)
            if got != "h264_nvenc":
                self.skipped.append(f"NVENC: not usable here (Mp4Sink encoder={args.encoder} chose {got})")

    def settings(self, batch: int) -> AnnotateSettings:
        return AnnotateSettings(batch_size=batch, smooth=self.args.smooth, crf=CRF, preset=PRESET, overwrite=True,
                                hwaccel=self.hwaccel, encoder=self.args.encoder)  # fmt: skip

    def _annotate(self, batch: int) -> list:
        annotator = FrameAnnotator(self.ex, self.renderer, TemporalSmoother(self.args.smooth))
        out = []
        for i in range(0, len(self.frames), batch):
            out += annotator(self.frames[i : i + batch])
        return out

    # -- the jobs: each returns the frames it handled and the decoder / encoder really used
    def decode(self, hwaccel: str | None) -> tuple[int, str]:
        with FileSource(self.clip, hwaccel=hwaccel) as source:
            return sum(1 for _ in source), decoder_label(source.decoder)

    def encode(self) -> tuple[int, str]:
        with Mp4Sink(self.workdir / "encode.mp4", self.info, crf=CRF, preset=PRESET, encoder=self.args.encoder) as sink:
            for image, pts, seconds in self.rendered:
                sink.encode(image, pts, seconds)
        return sink.frames_written, sink.encoder or "?"

    def engine_stage(self, batch: int) -> tuple[int, str]:
        return len(self._annotate(batch)), str(self.device)

    def pipeline(self, batch: int) -> tuple[int, str]:
        report = annotate_video(self.clip, self.workdir / "one.cam.mp4", self.ex, self.renderer, self.settings(batch))
        return report.stats.frames_written, report_codecs(report)

    def folder(self, batch: int) -> tuple[int, str]:
        pairs = [VideoJob(p, self.workdir / "out" / f"{p.stem}.cam.mp4") for p in self.inputs]
        frames, codecs, failed = 0, set(), []
        for video, result in annotate_many(pairs, self.ex, self.renderer, self.settings(batch), jobs=len(pairs)):
            if isinstance(result, BaseException):
                failed.append(f"{video.input.name}: {error_text(result)}")
            else:
                frames += result.stats.frames_written
                codecs.add(report_codecs(result))
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(pairs)} videos failed: " + "; ".join(failed))
        return frames, ", ".join(sorted(codecs))

    def capacity(self, batch: int) -> tuple[int, str]:
        """One decode -> encode pass per input at once, no model: what the codecs manage together."""

        def one(path: Path) -> tuple[int, str]:
            with FileSource(path, hwaccel=self.hwaccel) as source:
                with Mp4Sink(self.workdir / "capacity" / path.name, source.info, crf=CRF, preset=PRESET,
                             encoder=self.args.encoder) as sink:  # fmt: skip

                    def write(frame: Frame) -> None:
                        sink.encode(frame.image, frame.pts, frame.time)

                    stats = Pipeline(source, list, write, batch_size=batch, close_source=source.close).run()
            return stats.frames_written, f"{decoder_label(source.decoder)} -> {sink.encoder}"

        with ThreadPoolExecutor(len(self.inputs), thread_name_prefix="capacity") as pool:
            done = list(pool.map(one, self.inputs))  # raises the first failure, once all have ended
        return sum(f for f, _ in done), ", ".join(sorted({c for _, c in done}))

    # -- the sections
    def engine_only(self) -> None:
        args, info = self.args, self.info
        h, w = self.ex.input_size_for(info.height, info.width)
        pool = self.frames[: args.engine_frames]
        try:
            rows = [self.engine_row(method, batch, pool) for method in args.method_list for batch in args.batch_list]
        finally:
            self.ex.set_method("cam")  # what the pipeline runs
        t = ENGINE_TARGET[2]
        print(f"#### Engine only ({info.width}x{info.height} uint8 frames in memory -> model input {h}x{w})")
        print()
        print("forward: `ex.model(x)` on the preprocessed batch (inference mode); forward + map: `ex.explain(x)` "
              "on the same batch; full stage: `FrameAnnotator(explainer, renderer, None)` on the uint8 frames "
              "(upload, preprocess, model, map, overlay, box, label, download). Ratios are throughput ÷ forward's "
              "(median of per-round ratios).")  # fmt: skip
        print()
        print(markdown_table(
            ["method", "batch", "calls per run", "forward (frames/s)", "forward + map (frames/s)",
             "full stage (frames/s)", "map ÷ forward", "stage ÷ forward", "stage ÷ fwd min-max",
             f"target {ENGINE_TARGET[0]} batch {ENGINE_TARGET[1]} (>= {t}x)"],
            rows,
        ))  # fmt: skip
        print()

    def engine_row(self, method: str, batch: int, pool: list[Frame]) -> list:
        """One table row; a row that fails is reported and the others go on."""
        count = max(batch, (min(len(pool), 16 * batch) // batch) * batch)  # whole batches, at most 16 calls
        frames = [pool[i % len(pool)] for i in range(count)]
        step(f"engine only: {method}, batch {batch} ({count} frames per run) ...")
        try:
            self.ex.set_method(method)
            r = run_in_thread(
                lambda: measure_engine(self.ex, self.renderer, frames, batch, self.args.repeat, self.sync)
            )
        except Exception as err:  # noqa: BLE001 - reported, the other rows go on
            self.failures.append(f"engine only {method} batch {batch}: {error_text(err)}")
            say(traceback.format_exc())
            return [method, batch, "-", "**failed**", error_text(err), "-", "-", "-", "-", "-"]
        self.engine[(method, batch)] = r
        target = "-"
        if (method, batch) == ENGINE_TARGET[:2]:
            t = ENGINE_TARGET[2]
            target = f"map {verdict(r['ratio_map'], t)}, stage {verdict(r['ratio_stage'], t)} (>= {t}x)"
        return [method, batch, f"{r['calls']} x {batch}", fmt(r["fwd"]), fmt(r["map"]), fmt(r["stage"]),
                f"{r['ratio_map']:.2f}x", f"{r['ratio_stage']:.2f}x",
                f"{r['stage_range'][0]:.2f}-{r['stage_range'][1]:.2f}", target]  # fmt: skip

    def one_video(self) -> None:
        args, smooth = self.args, f"smoothing {self.args.smooth:g} s"
        step("rendering the clip once (the encode-only runs' frames; engine warm-up) ...")
        self.rendered = run_in_thread(
            lambda: [(r.image, r.frame.pts, r.frame.time) for r in self._annotate(max(args.pipe_batches))]
        )
        decode_sw, decode_hw = "decode [software]", f"decode [hwaccel={self.hwaccel}]"
        encode = f"encode [encoder={args.encoder}]"
        runs = {decode_sw: (partial(self.decode, None), "FileSource over the clip")}  # name -> (job, what)
        if self.hwaccel:
            runs[decode_hw] = (partial(self.decode, self.hwaccel), "FileSource over the clip")
        runs[encode] = (self.encode, "Mp4Sink over the rendered frames")
        for b in args.pipe_batches:
            runs[f"engine batch {b}"] = (
                partial(self.engine_stage, b),
                f"FrameAnnotator, cam, {smooth}, over the decoded frames",
            )
            runs[f"pipeline batch {b}"] = (partial(self.pipeline, b), f"annotate_video to a temp file ({smooth})")
        step(f"stages and the one-video pipeline ({args.repeat} rounds) ...")
        one = run_rounds({name: job for name, (job, _) in runs.items()}, args.repeat, self.sync)
        self.rendered = []  # the folder section needs no pre-rendered frames
        decoder = decode_hw if self.hwaccel else decode_sw  # what annotate_video decodes with
        rows = []
        for name, r in one.items():
            stages = [decoder, name.replace("pipeline", "engine"), encode]
            ratio = self.pipeline_ratio(one, name, stages) if name.startswith("pipeline") else "-"
            rows.append([name, runs[name][1], r.get("used", "?"), *self.cells(name, r), ratio])
        hw_used = one.get(decode_hw, {}).get("used")
        if hw_used and f"({self.hwaccel})" not in hw_used:
            self.skipped.append(f"hardware decoding: FileSource(hwaccel={self.hwaccel!r}) fell back to {hw_used}")
        print(f"#### Stages and the pipeline, one video ({len(self.frames)} frames)")
        print()
        print(markdown_table(["run", "what", "decoder / encoder really used", "frames/s", "min-max",
                              "CPU cores busy", "pipeline ÷ slowest stage"], rows,
                             align=["l", "l", "l", "r", "r", "r", "r"]))  # fmt: skip
        print()

    def pipeline_ratio(self, one: dict[str, dict], name: str, stages: list[str]) -> str:
        """The pipeline's frames/s over its slowest stage's, for the table; the verdict kept for the targets."""
        if any("error" in one[s] for s in [name, *stages]):
            return "-"
        slowest = min(stages, key=lambda s: one[s]["fps"])
        fps, x = one[name]["fps"], one[name]["fps"] / one[slowest]["fps"]
        self.pipeline_verdicts.append(
            f"- one-video pipeline, batch {name.rsplit(' ', 1)[1]}: {fmt(fps)} frames/s = {x:.2f}x its slowest "
            f"stage ({slowest}, {fmt(one[slowest]['fps'])} frames/s) -> {verdict(x, PIPELINE_TARGET)} "
            f"(target >= {PIPELINE_TARGET})")  # fmt: skip
        return f"**{x:.2f}** (÷ {slowest})"

    def several_videos(self) -> None:
        n, batch = self.args.videos, max(self.args.pipe_batches)
        runs = {
            "folder": (partial(self.folder, batch), f"annotate_many(jobs={n}), batch {batch}, smoothing {self.args.smooth:g} s"),
            "capacity": (partial(self.capacity, batch), f"{n} x Pipeline(FileSource -> identity -> Mp4Sink) in {n} threads, no model"),
        }  # fmt: skip
        step(f"{n} videos at once: annotate_many vs decode -> encode only ({self.args.repeat} rounds) ...")
        many = run_rounds({name: job for name, (job, _) in runs.items()}, self.args.repeat, self.sync)
        folder, capacity = many["folder"], many["capacity"]
        ratio = "-"
        if "error" not in folder and "error" not in capacity:
            x = folder["fps"] / capacity["fps"]
            ratio = f"**{x:.2f}**"
            self.folder_verdict = (f"- folder run ({n} videos at once): {fmt(folder['fps'])} frames/s total = "
                                   f"{x:.2f}x the codec capacity beside it ({fmt(capacity['fps'])} frames/s) -> "
                                   f"{verdict(x, FOLDER_TARGET)} (target >= {FOLDER_TARGET})")  # fmt: skip
        rows = [[name, runs[name][1], r.get("used", "?"), n, *self.cells(name, r), ratio if name == "folder" else "-"]
                for name, r in many.items()]  # fmt: skip
        print(f"#### {n} videos at once ({n} x {len(self.frames)} frames)")
        print()
        print(markdown_table(["run", "what", "decoder -> encoder really used", "videos", "total frames/s", "min-max",
                              "CPU cores busy", "folder ÷ capacity"], rows,
                             align=["l", "l", "l", "r", "r", "r", "r", "r"]))  # fmt: skip
        print()

    def cells(self, name: str, r: dict) -> list[str]:
        """frames/s, min-max and CPU cores busy of a run_rounds result, or its failure (counted in failures)."""
        if "error" in r:
            self.failures.append(f"{name}: {r['error']}")
            return ["**failed**", r["error"], "-"]
        return [fmt(r["fps"]), f"{fmt(r['min'])}-{fmt(r['max'])}", f"{r['cores']:.2f}"]

    def section(self, title: str, body: Callable[[], None]) -> None:
        """Run one section; a failure is reported and the next section goes on."""
        try:
            body()
        except Exception as err:  # noqa: BLE001 - reported
            self.failures.append(f"{title}: {error_text(err)}")
            say(traceback.format_exc())
            print(f"{title}: **failed** ({error_text(err)})\n")
        sys.stdout.flush()

    # -- the report
    def header(self) -> None:
        args, info, ex = self.args, self.info, self.ex
        h, w = ex.input_size_for(info.height, info.width)
        print(f"### GPU path: stages, pipeline and folder run ({info.width}x{info.height} H.264 clip, "
              f"{len(self.frames)} frames, from big_buck_bunny.mp4)")  # fmt: skip
        print()
        for line in machine_facts() + device_lines(self.device, args.precision):
            print(line)
        print(f"- clip: big_buck_bunny.mp4 (1280x720, 132 frames) scaled with cv2.resize to {info.width}x{info.height}, "
              f"looped to {len(self.frames)} frames ({len(self.frames) / info.fps:.1f} s at {info.fps:g} fps), Mp4Sink "
              f"libx264 {PRESET} crf {CRF}, no audio ({self.clip.stat().st_size / 2**20:.1f} MiB, made in "
              f"{self.made_in:.1f} s); {args.videos} copies for the folder run")  # fmt: skip
        print(f"- model: {ex.spec.name}, input {h}x{w}, target layer `{ex.target_layer}`; render: CLI defaults (jet, "
              f"alpha 0.5, box, label); output x264 settings {PRESET} crf {CRF}")  # fmt: skip
        decode_runs = "software" + (f"; hwaccel={self.hwaccel}" if self.hwaccel else "")
        print(f"- asked: `--hwaccel {args.hwaccel}` -> decode runs: {decode_runs}; `--encoder {args.encoder}` -> "
              f"encode runs: encoder={args.encoder}; pipeline and folder run: "
              f"AnnotateSettings(hwaccel={self.hwaccel!r}, encoder={args.encoder!r})")  # fmt: skip
        print(f"- {args.repeat} interleaved rounds per section, medians; every run in a fresh worker thread"
              f"{', CUDA synchronised around each' if self.device.type == 'cuda' else ''}")  # fmt: skip
        print()
        sys.stdout.flush()

    def targets(self, started: float) -> None:
        info = self.info
        print("#### Targets")
        print()
        method, batch, t = ENGINE_TARGET
        r = self.engine.get((method, batch))
        if r is None:
            print(
                f"- engine {method} batch {batch}: not measured (needs `{method}` in --methods and {batch} in --batches)"
            )
        else:
            print(f"- engine {method} batch {batch}, forward + map (model + CAM on the preprocessed batch): "
                  f"{fmt(r['map'])} frames/s = {r['ratio_map']:.2f}x forward only ({fmt(r['fwd'])}) -> "
                  f"{verdict(r['ratio_map'], t)} (target >= {t}x)")  # fmt: skip
            print(f"- engine {method} batch {batch}, full stage ({info.width}x{info.height} upload, preprocess, model, "
                  f"map, overlay, box, label, download): {fmt(r['stage'])} frames/s = {r['ratio_stage']:.2f}x forward "
                  f"only -> {verdict(r['ratio_stage'], t)} (target >= {t}x)")  # fmt: skip
        for line in self.pipeline_verdicts or ["- one-video pipeline: not measured"]:
            print(line)
        print(self.folder_verdict)
        print(f"- skipped: {'; '.join(self.skipped) or 'nothing'}")
        if self.failures:
            print(f"- **errors**: {'; '.join(self.failures)}")
        if self.device.type == "cuda":
            print(
                f"- peak GPU memory allocated by torch: {torch.cuda.max_memory_allocated(self.device) / 2**30:.1f} GiB"
            )
        print(f"- whole run: {time.perf_counter() - started:.0f} s")


def device_lines(device: torch.device, precision: str) -> list[str]:
    hw = ", ".join(av.codec.hwaccel.hwdevices_available()) or "none"
    encoders = ", ".join(c for c in ("libx264", "h264_nvenc") if c in av.codecs_available)
    lines = []
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        lines.append(f"- device: **{torch.cuda.get_device_name(device)}** ({device}, compute capability "
                     f"{p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, cuDNN "
                     f"{torch.backends.cudnn.version()}, `cudnn.benchmark` on, {precision}")  # fmt: skip
    else:
        lines.append(
            f"- device: **CPU** (no CUDA in use: `--device {device}`; CUDA available: {torch.cuda.is_available()}), {precision}"
        )
    lines.append(f"- FFmpeg {getattr(av, 'ffmpeg_version_info', '?')} (PyAV {av.__version__}); hardware device types "
                 f"in this build: {hw}; H.264 encoders in this build: {encoders}")  # fmt: skip
    lines.append(f"- camvideo from `{Path(camvideo.__file__).resolve().parent}`")
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N [%(default)s]")
    parser.add_argument(
        "--frames", type=int, default=576, help="frames in the clip (576: whole batches of 8, 32 and 64) [%(default)s]"
    )
    parser.add_argument("--height", type=int, default=1080, help="clip height, 16:9 [%(default)s]")
    parser.add_argument("--batches", default="1,8,32,64", help="engine-only batch sizes [%(default)s]")
    parser.add_argument("--methods", default=",".join(FAST_METHODS), help="engine-only methods [%(default)s]")
    parser.add_argument(
        "--engine-frames",
        type=int,
        default=128,
        help="frames per engine-only run: at most this many, --frames and 16 calls, in whole "
        "batches (at least one) [%(default)s]",
    )
    parser.add_argument(
        "--pipeline-batches",
        default="32",
        help=f"batch sizes of the one-video pipeline, comma-separated (the CLI's default: "
        f"{default_batch_size('cuda')} on CUDA, {default_batch_size('cpu')} on the CPU); the "
        "folder run uses the largest [%(default)s]",
    )
    parser.add_argument("--videos", type=int, default=4, help="videos at once in the folder run (jobs) [%(default)s]")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"), help="[%(default)s]")
    parser.add_argument(
        "--smooth", type=float, default=0.25, help="pipeline smoothing, seconds (the CLI default) [%(default)s]"
    )
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds [%(default)s]")
    parser.add_argument("--encoder", default="auto", choices=("auto", "libx264", "h264_nvenc"), help="[%(default)s]")
    parser.add_argument(
        "--hwaccel",
        default="auto",
        choices=("auto", "cuda", "none"),
        help="hardware decoding: auto = cuda when the device is CUDA and PyAV can decode on it "
        "(as the CLI decides) [%(default)s]",
    )
    args = parser.parse_args()
    args.batch_list = [int(b) for b in args.batches.split(",") if b.strip()]
    args.method_list = [m.strip() for m in args.methods.split(",") if m.strip()]
    args.pipe_batches = [int(b) for b in args.pipeline_batches.split(",") if b.strip()]
    if min([args.frames, args.videos, args.repeat, args.engine_frames] + args.batch_list + args.pipe_batches) < 1:
        parser.error("--frames, --engine-frames, --videos, --repeat and batch sizes must be at least 1")
    if not args.pipe_batches:
        parser.error("--pipeline-batches needs at least one batch size")
    return args


def main() -> int:
    args = parse_args()
    started = time.perf_counter()
    if resolve_device(args.device).type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels once
    step(f"loading the model on {args.device} ...")
    ex = Explainer("efficientnet_lite0", method="cam", device=args.device, precision=args.precision)
    with tempfile.TemporaryDirectory(prefix="camvideo-bench-gpu-") as tmp:
        bench = Bench(args, ex, Path(tmp))
        bench.header()
        bench.section("Engine only", bench.engine_only)
        bench.section("Stages and the pipeline", bench.one_video)
        bench.section("Several videos at once", bench.several_videos)
    bench.targets(started)
    ex.close()
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
