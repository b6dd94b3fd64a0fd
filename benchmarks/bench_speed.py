"""Whole-process speed: camvideo against the script a user would write, and the CPU budget.

One command, one run, every figure measured beside the others in interleaved rounds
(the order rotating each round), medians reported:

* whole processes (start-up included) over a >= 500-frame 1280x720 H.264 clip, the
  sample Big Buck Bunny remuxed four times over (528 frames, cached in the temp dir):
  ``camvideo annotate`` with defaults, with ``--method gradcam``, with ``--no-video
  --jsonl`` (when the CLI has it); a plain sequential script
  (``benchmarks/seed_recipe.py``); pytorch-grad-cam's GradCAM at batch 1 and 8 with its
  ``show_cam_on_image``, and torchcam's CAM with its ``overlay_mask``
  (``benchmarks/library_baselines.py``); and start-up alone (annotate on a 5-frame clip);
* the stages alone, in a child process, in CPU-ms per frame: decode (``FileSource``),
  model (``Explainer.explain``, default batch), engine (``FrameAnnotator``: model, map,
  overlay, box, label, smoothing), encode (``Mp4Sink``, x264 defaults); the CPU budget line
  cores x 1000 / (decode + engine + encode) frames/s beside the pipeline
  (``annotate_video`` in-process, no start-up) and the whole process;
* the live row: ``benchmarks/bench_live.py --every 1`` (640x480 30 fps source, the real
  window, Qt offscreen);
* CPU steal (the hypervisor's) during each run, so a run on a busy host shows as one.

    python benchmarks/bench_speed.py                 # 3 rounds, live 15 s
    python benchmarks/bench_speed.py --rounds 1 --live-seconds 8 --skip torchcam gradcam-b1
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402
    SAMPLES,
    cpu_times,
    fmt,
    machine_facts,
    make_longer,
    markdown_table,
    median,
    say,
    steal_percent,
    usable_cpus,
)  # fmt: skip

CACHE = Path(tempfile.gettempdir()) / "camvideo-bench-cache"
GOALS = {"annotate": 1.5, "gradcam": 3.0, "budget": 0.8, "live_fps": 25.0, "live_p95": 100.0}


# -- the clip -----------------------------------------------------------------------------------


def make_head(source: Path, target: Path, frames: int) -> None:
    """The first ``frames`` video frames of ``source`` re-encoded (for the start-up row)."""
    import av

    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        stream = out.add_stream("libx264", rate=inp.streams.video[0].average_rate)
        stream.width, stream.height, stream.pix_fmt = inp.streams.video[0].width, inp.streams.video[0].height, "yuv420p"
        for i, frame in enumerate(inp.decode(video=0)):
            if i == frames:
                break
            frame.pts = None
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def count_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.demux(video=0) if _.size)


def clips(times: int) -> tuple[Path, Path]:
    CACHE.mkdir(parents=True, exist_ok=True)
    long = CACHE / f"big_buck_bunny.x{times}.mp4"
    if not long.exists():
        say(f"making {long} ...")
        make_longer(SAMPLES / "big_buck_bunny.mp4", long, times)
    head = CACHE / "big_buck_bunny.head5.mp4"
    if not head.exists():
        make_head(SAMPLES / "big_buck_bunny.mp4", head, 5)
    return long, head


# -- whole processes ----------------------------------------------------------------------------
def camvideo_cli() -> list[str]:
    exe = shutil.which("camvideo")
    return [exe] if exe else [sys.executable, "-c", "import sys; from camvideo.cli import main; sys.exit(main())"]


def has_no_video() -> bool:
    out = subprocess.run(camvideo_cli() + ["annotate", "--help"], capture_output=True, text=True)
    return "--no-video" in out.stdout


def commands(clip: Path, head: Path, work: Path, skip: set[str]) -> dict[str, tuple[str, list[str], Path]]:
    """name -> (what, argv, the clip it reads)."""
    cli = camvideo_cli()
    py = sys.executable
    runs = {
        "camvideo": (
            "`camvideo annotate CLIP` (defaults: cam)",
            cli + ["annotate", str(clip), "-o", str(work / "cam.mp4"), "--overwrite", "-q"],
            clip,
        ),
        "camvideo-torch": (
            "`camvideo annotate CLIP --backend torch` (the network in PyTorch, not a compiled runtime)",
            cli + ["annotate", str(clip), "-o", str(work / "camt.mp4"), "--overwrite", "-q", "--backend", "torch"],
            clip,
        ),
        "camvideo-gradcam": (
            "`camvideo annotate CLIP --method gradcam`",
            cli + ["annotate", str(clip), "-o", str(work / "gc.mp4"), "--overwrite", "-q", "--method", "gradcam"],
            clip,
        ),
        "camvideo-no-video": (
            "`camvideo annotate CLIP --no-video --jsonl OUT`",
            cli + ["annotate", str(clip), "--no-video", "--jsonl", str(work / "nv.jsonl"), "--overwrite", "-q"],
            clip,
        ),
        "recipe": (
            "a plain sequential script (`seed_recipe.py`: cv2, 224x224, numpy CAM, mp4v)",
            [py, str(HERE / "seed_recipe.py"), str(clip), str(work / "seq.mp4")],
            clip,
        ),
        "gradcam-b1": (
            "pytorch-grad-cam GradCAM, batch 1, show_cam_on_image, mp4v",
            [py, str(HERE / "library_baselines.py"), "gradcam", str(clip), str(work / "gc1.mp4"), "--batch", "1"],
            clip,
        ),
        "gradcam-b8": (
            "pytorch-grad-cam GradCAM, batch 8, show_cam_on_image, mp4v",
            [py, str(HERE / "library_baselines.py"), "gradcam", str(clip), str(work / "gc8.mp4"), "--batch", "8"],
            clip,
        ),
        "torchcam": (
            "torchcam CAM + overlay_mask (PIL), batch 1, mp4v",
            [py, str(HERE / "library_baselines.py"), "torchcam", str(clip), str(work / "tc.mp4")],
            clip,
        ),
        "startup": (
            "start-up: `camvideo annotate` on a 5-frame 720p clip",
            cli + ["annotate", str(head), "-o", str(work / "head.mp4"), "--overwrite", "-q"],
            head,
        ),
    }
    if "camvideo-no-video" not in skip and not has_no_video():
        say("this camvideo has no --no-video: that row is left out")
        skip = skip | {"camvideo-no-video"}
    return {k: v for k, v in runs.items() if k not in skip}


def run_process(argv: list[str]) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    steal0 = cpu_times()
    w0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - w0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(argv)}\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "steal": steal_percent(steal0, cpu_times())}


# -- the stages, in a child process -------------------------------------------------------------
def stages_child(clip: Path, frames_kept: int) -> None:
    """Print JSON: CPU-ms per frame of decode, model, engine, encode, and the in-process pipeline."""
    import threading

    import torch
    from _common import run_in_thread

    from camvideo import Explainer
    from camvideo.jobs import AnnotateSettings, FrameAnnotator, annotate_video
    from camvideo.render import Renderer, TemporalSmoother
    from camvideo.sinks import Mp4Sink
    from camvideo.sources import FileSource

    settings = AnnotateSettings()  # the CLI's defaults
    batch = settings.batch_size or 2
    ex = Explainer(device="cpu")
    renderer = Renderer(class_names=ex.class_names)
    work = Path(tempfile.mkdtemp(prefix="bench_speed_"))
    out: dict[str, float] = {}

    def cpu_ms_per_frame(fn) -> float:
        c0 = time.process_time()
        n = run_in_thread(fn)
        return 1000 * (time.process_time() - c0) / n

    def decode() -> int:
        n = 0
        with FileSource(clip) as source:
            for frame in source:
                if len(kept) < frames_kept:
                    kept.append(frame)
                n += 1
        info.append(source.info)
        return n

    kept: list = []
    info: list = []
    out["decode"] = cpu_ms_per_frame(decode)
    images = torch.from_numpy(__import__("numpy").stack([f.image for f in kept[: batch * 4]]))

    def model() -> int:
        with torch.inference_mode():
            ex.explain(images[:batch])  # warm-up
            for i in range(0, len(images), batch):
                ex.explain(images[i : i + batch])
        return len(images)

    out["model"] = cpu_ms_per_frame(model)
    rendered: list = []

    def engine() -> int:
        annotator = FrameAnnotator(ex, renderer, TemporalSmoother(settings.smooth))
        annotator(kept[:batch])  # warm-up
        rendered.clear()
        for i in range(0, len(kept), batch):
            rendered.extend(annotator(kept[i : i + batch]))
        return len(kept)

    out["engine"] = cpu_ms_per_frame(engine)

    def encode() -> int:
        sink = Mp4Sink(work / "encode.mp4", info[0])
        n = 0
        fps = float(info[0].fps or 25.0)
        for _ in range(max(1, 264 // len(rendered))):  # the kept frames again, timed on
            for result in rendered:
                sink.encode(result.image, None, n / fps)
                n += 1
        sink.close()
        return n

    try:
        out["encode"] = cpu_ms_per_frame(encode)
    except Exception as err:  # noqa: BLE001 - a changed sink API must not hide the rest
        say(f"encode stage: {err!r}")
        out["encode"] = float("nan")
    w0, c0 = time.perf_counter(), time.process_time()
    report = annotate_video(clip, work / "pipeline.mp4", ex, renderer, AnnotateSettings(overwrite=True))
    wall = time.perf_counter() - w0
    frames = report.stats.frames_written
    out["pipeline_fps"] = frames / wall
    out["pipeline_cpu"] = 1000 * (time.process_time() - c0) / frames
    out["threads"] = threading.active_count()
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out))


def run_stages(clip: Path, frames_kept: int) -> dict | None:
    done = subprocess.run([sys.executable, __file__, "--_stages", str(clip), "--_kept", str(frames_kept)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        say(f"stages child failed: {done.stderr[-1500:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_live(seconds: float) -> dict | None:
    """The every=1 row of bench_live.py's table, by column name."""
    done = subprocess.run([sys.executable, str(HERE / "bench_live.py"), "--every", "1", "--seconds", str(seconds)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        say(f"live benchmark failed: {done.stderr[-1500:]}")
        return None
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if cells[0] == "1":
            return dict(zip(header, cells))
    return None


# -- report -------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds [3]")
    parser.add_argument("--times", type=int, default=4, help="the sample remuxed this many times over [4: 528 frames]")
    parser.add_argument(
        "--live-seconds", type=float, default=15.0, help="measured seconds of the live row; 0 skips it [15]"
    )
    parser.add_argument(
        "--kept", type=int, default=64, help="decoded frames the engine and encode stages run over [64]"
    )
    parser.add_argument("--skip", nargs="*", default=[], help="run names to leave out (camvideo, camvideo-torch, camvideo-gradcam, "
                        "camvideo-no-video, recipe, gradcam-b1, gradcam-b8, torchcam, startup, stages)")  # fmt: skip
    parser.add_argument("--_stages", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_kept", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._stages:
        stages_child(args._stages, args._kept)
        return 0

    facts = machine_facts()
    clip, head = clips(args.times)
    frames = count_frames(clip)
    head_frames = count_frames(head)
    work = Path(tempfile.mkdtemp(prefix="bench_speed_"))
    runs = commands(clip, head, work, set(args.skip))
    steal_all0 = cpu_times()
    results: dict[str, list[dict]] = {k: [] for k in runs}
    stages: list[dict] = []
    names = list(runs) + ([] if "stages" in args.skip else ["stages"])
    try:
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                say(f"round {r + 1}/{args.rounds}: {name} ...")
                if name == "stages":
                    s = run_stages(clip, args.kept)
                    if s:
                        stages.append(s)
                    continue
                results[name].append(run_process(runs[name][1]))
                say(f"  {results[name][-1]}")
        live = run_live(args.live_seconds) if args.live_seconds > 0 else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    steal_all = steal_percent(steal_all0, cpu_times())

    def fps_of(name: str) -> float:
        n = head_frames if name == "startup" else frames
        return median([n / x["wall"] for x in results[name]]) if results.get(name) else float("nan")

    cores = usable_cpus()
    print(f"### Whole-process speed: {clip.name} (1280x720 H.264, {frames} frames), CPU\n")
    for line in facts:
        print(line)
    print(f"- {args.rounds} interleaved rounds, medians; CPU steal over the whole benchmark: "
          f"{fmt(steal_all) if steal_all is not None else 'n/a'} %\n")  # fmt: skip
    base = fps_of("recipe")
    rows = []
    for name, (what, _, _) in runs.items():
        res = results[name]
        n = head_frames if name == "startup" else frames
        fps = [n / x["wall"] for x in res]
        rows.append([
            name, what, fmt(fps_of(name)), f"{fmt(min(fps))}-{fmt(max(fps))}", fmt(median([x["wall"] for x in res]), 2),
            fmt(median([1000 * x["cpu"] / n for x in res]), 0), fmt(median([x["cpu"] / x["wall"] for x in res]), 2),
            fmt(median([x["steal"] or 0.0 for x in res]), 1),
            "-" if name == "startup" else fmt(fps_of(name) / base, 2) + "x",
        ])  # fmt: skip
    print(markdown_table(["run", "what", "frames/s", "min-max", "wall s", "CPU-ms/frame", "cores busy", "steal %",
                          "vs recipe"], rows, align=["l", "l"] + ["r"] * 7))  # fmt: skip

    print()
    if stages:
        st = {k: median([s[k] for s in stages]) for k in stages[0]}
        total = st["decode"] + st["engine"] + st["encode"]
        budget = cores * 1000 / total
        analysis = cores * 1000 / (st["decode"] + st["model"])
        print(markdown_table(
            ["stage (alone, in-process)", "CPU-ms/frame"],
            [["decode (FileSource)", fmt(st["decode"])], ["model (Explainer.explain, default batch)", fmt(st["model"])],
             ["engine (FrameAnnotator: model, map, overlay, box, label, smoothing)", fmt(st["engine"])],
             ["encode (Mp4Sink, x264 defaults)", fmt(st["encode"])],
             ["decode + engine + encode", fmt(total)]]))  # fmt: skip
        print()
        print(markdown_table(
            ["", "frames/s", "vs CPU budget line"],
            [[f"CPU budget line: {cores} cores x 1000 / {fmt(total)} CPU-ms", fmt(budget), "1.00"],
             ["pipeline in-process (annotate_video, no start-up)", fmt(st["pipeline_fps"]), fmt(st["pipeline_fps"] / budget, 2)],
             ["whole process (`camvideo annotate`, start-up included)", fmt(fps_of("camvideo")), fmt(fps_of("camvideo") / budget, 2)],
             [f"analysis line: {cores} x 1000 / (decode + model) CPU-ms", fmt(analysis), "-"],
             ["`--no-video --jsonl`, whole process", fmt(fps_of("camvideo-no-video")), fmt(fps_of("camvideo-no-video") / analysis, 2) + " of the analysis line"]]))  # fmt: skip
        print()
    else:
        st, budget = None, float("nan")
    if live:
        print(f"Live (`benchmarks/bench_live.py --every 1 --seconds {args.live_seconds:g}`): "
              + ", ".join(f"{k}: {v}" for k, v in live.items()) + "\n")  # fmt: skip

    best_gc = max([f for f in (fps_of("gradcam-b1"), fps_of("gradcam-b8")) if f == f], default=float("nan"))
    goals = [
        ("1. annotate (cam) / the plain script, whole process", fps_of("camvideo") / base, GOALS["annotate"]),
        (
            "2. annotate --method gradcam / pytorch-grad-cam at its best batch",
            fps_of("camvideo-gradcam") / best_gc,
            GOALS["gradcam"],
        ),
        (
            "3. pipeline in-process / CPU budget line",
            st["pipeline_fps"] / budget if st else float("nan"),
            GOALS["budget"],
        ),
    ]
    for what, value, goal in goals:
        verdict = (
            "n/a" if value != value else ("PASS" if value >= goal else f"SHORT by {fmt(100 * (1 - value / goal), 0)} %")
        )
        print(f"- {what}: **{fmt(value, 2)}x** (goal >= {goal:g}x) -> {verdict}")
    if live:
        fps_l = float(live.get("displayed fps", "nan"))
        p95 = float(live.get("p95 latency (ms)", "nan"))
        ok = fps_l >= GOALS["live_fps"] and p95 <= GOALS["live_p95"]
        print(f"- 4. live --every 1: {fmt(fps_l)} frames/s displayed, p95 {fmt(p95, 0)} ms (goal >= 25, <= 100) -> "
              f"{'PASS' if ok else 'SHORT'}")  # fmt: skip
    print(f"- 5. analysis mode (--no-video --jsonl): {fmt(fps_of('camvideo-no-video'))} frames/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
