"""Temporal smoothing: less flicker, while the heatmap still follows a moving object.

Runs the engine stage exactly as ``camvideo annotate`` does (``FrameAnnotator``: default
model, method cam, top-1 target with the smoother's class hysteresis, CLI render
defaults) over every frame of a clip, with ``--smooth 0`` (off), ``0.25`` (the CLI
default) and ``0.5`` seconds, and measures on what is drawn:

* flicker: the mean absolute frame-to-frame change of the normalised map, at frame
  resolution: the renderer's colormap index (0..255, after normalisation, with the
  smoothed bounds when smoothing is on, and bilinear upsampling to the frame), divided
  by 255 and averaged over all pixels and all consecutive frame pairs, in % of full scale;
* top-1 label switches: frames whose shown class differs from the previous frame's;
* tracking, on ``cat_and_coffee.mp4``, whose cat slides left to right over frames 0-59:
  the x of the map's peak (the mean x of the pixels at the maximum index) and the x of
  the centre of the 20 % box (the box drawn on the frame), against the cat's true centre
  x (the trajectory of ``benchmarks/make_sample_clip.py``): Pearson correlation at lag 0,
  and the lag (in frames, 0.5 steps up to 20) at which the correlation with the true
  trajectory, shifted later in time, is highest: how far behind the object the map is.

Then the flicker and switch counts on ``big_buck_bunny.mp4`` (real footage).

    python benchmarks/bench_smoothing.py [--smooth 0,0.25,0.5] [--batch-size 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import SAMPLES, machine_facts, markdown_table, say  # noqa: E402

from camvideo.jobs import FrameAnnotator  # noqa: E402
from camvideo.render import (
    Renderer,  # noqa: E402
    TemporalSmoother,  # noqa: E402
)
from camvideo.sources import FileSource  # noqa: E402

CAT_FRAMES = 60  # the cat segment of cat_and_coffee.mp4 (0-2 s at 30 fps)


def cat_trajectory() -> callable:
    """The cat's true centre x as a function of the (fractional) frame index 0..59.

    Taken from the clip generator: the photo's top-left x goes from 12 to
    WIDTH - width - 12 along a smoothstep; before frame 0 it sits at the start.
    """
    import make_sample_clip as clip

    try:
        from skimage import data

        width = clip._scaled(data.chelsea(), 280).shape[1]
    except ImportError:  # chelsea() is 300 x 451; scaled to a height of 280 it is 421 wide
        width = round(451 * 280 / 300)
    x0, x1 = 12.0, clip.WIDTH - width - 12.0
    last = clip.SEGMENT_FRAMES - 1

    def centre(i: np.ndarray) -> np.ndarray:
        t = np.clip(np.asarray(i, dtype=float) / last, 0.0, 1.0)
        return x0 + (x1 - x0) * clip._ease(t) + width / 2

    return centre


class MeasuringRenderer(Renderer):
    """The CLI's renderer, also recording, per frame, the colormap index map it draws from."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reset_stats()

    def reset_stats(self) -> None:
        self.previous: np.ndarray | None = None
        self.changes: list[float] = []  # mean |index_t - index_{t-1}| / 255 per frame pair
        self.peak_x: list[float] = []

    def overlay(self, frames, maps, bounds=None):
        images, indices = super().overlay(frames, maps, bounds)
        for index in indices:
            current = index.astype(np.int16)
            if self.previous is not None:
                self.changes.append(float(np.abs(current - self.previous).mean()) / 255.0)
            self.previous = current
            top = index.max()
            self.peak_x.append(float(np.nonzero(index == top)[1].mean()))
        return images, indices


def run(video: Path, tau: float, ex, renderer: MeasuringRenderer, batch_size: int, frames: list) -> dict:
    renderer.reset_stats()
    annotator = FrameAnnotator(ex, renderer, TemporalSmoother(tau))
    results = []
    for i in range(0, len(frames), batch_size):
        results += annotator(frames[i : i + batch_size])
    classes = [r.class_index for r in results]
    switches = [i for i in range(1, len(classes)) if classes[i] != classes[i - 1]]
    box_x = [np.nan if r.box is None else (r.box[0] + r.box[2]) / 2 for r in results]
    return {
        "flicker": float(np.mean(renderer.changes)),
        "switches": switches,
        "classes": classes,
        "peak_x": np.array(renderer.peak_x),
        "box_x": np.array(box_x, dtype=float),
    }


def tracking(x: np.ndarray, centre) -> tuple[float, float, float]:
    """(correlation at lag 0, best lag in frames, correlation at that lag) over the cat segment."""
    t = np.arange(CAT_FRAMES, dtype=float)
    x = x[:CAT_FRAMES]
    ok = ~np.isnan(x)
    corr0 = float(np.corrcoef(x[ok], centre(t)[ok])[0, 1])
    best = max(np.arange(0, 20.01, 0.5), key=lambda lag: np.corrcoef(x[ok], centre(t - lag)[ok])[0, 1])
    return corr0, float(best), float(np.corrcoef(x[ok], centre(t - best)[ok])[0, 1])


def decode(video: Path) -> list:
    with FileSource(video) as source:
        return list(source)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smooth", default="0,0.25,0.5", help="time constants in seconds [%(default)s]")
    parser.add_argument("--batch-size", type=int, default=2, help="[%(default)s, the CLI default on the CPU]")
    parser.add_argument("--tracking-video", type=Path, default=SAMPLES / "cat_and_coffee.mp4")
    parser.add_argument("--flicker-video", type=Path, default=SAMPLES / "big_buck_bunny.mp4")
    args = parser.parse_args()
    taus = [float(v) for v in args.smooth.split(",")]

    from camvideo import Explainer

    ex = Explainer()
    renderer = MeasuringRenderer(class_names=ex.class_names)
    names = ex.class_names
    centre = cat_trajectory()

    cat_frames = decode(args.tracking_video)
    cat = {}
    for tau in taus:
        say(f"{args.tracking_video.name}, smooth {tau} s ...")
        cat[tau] = run(args.tracking_video, tau, ex, renderer, args.batch_size, cat_frames)
    bbb_frames = decode(args.flicker_video)
    fps_bbb = (len(bbb_frames) - 1) / (bbb_frames[-1].time - bbb_frames[0].time) if len(bbb_frames) > 1 else 0
    bbb = {}
    for tau in taus:
        say(f"{args.flicker_video.name}, smooth {tau} s ...")
        bbb[tau] = run(args.flicker_video, tau, ex, renderer, args.batch_size, bbb_frames)
    del bbb_frames

    first = cat_frames[0].image.shape
    fps_cat = (len(cat_frames) - 1) / (cat_frames[-1].time - cat_frames[0].time)
    print(f"### Temporal smoothing: flicker vs tracking ({args.tracking_video.name}, {first[1]}x{first[0]}, "
          f"{len(cat_frames)} frames at {fps_cat:.0f} fps)")  # fmt: skip
    print()
    for line in machine_facts():
        print(line)
    print(f"- model: {ex.spec.name}, method cam, top-1 with the smoother's hysteresis, batch {args.batch_size}; "
          "flicker is measured at frame resolution on the colormap index the overlay is drawn from")  # fmt: skip
    print()
    off = cat[taus[0]]["flicker"] if taus[0] == 0 else None
    rows = []
    for tau in taus:
        r = cat[tau]
        switches = ", ".join(str(i) for i in r["switches"][:6]) + (" ..." if len(r["switches"]) > 6 else "")
        c0, lag, cl = tracking(r["peak_x"], centre)
        b0, blag, bl = tracking(r["box_x"], centre)
        rows.append([
            f"{tau:g}" + (" (off)" if tau == 0 else " (default)" if tau == 0.25 else ""),
            f"{100 * r['flicker']:.2f} %",
            f"{r['flicker'] / off:.2f}x" if off else "-",
            f"{len(r['switches'])} ({switches})" if r["switches"] else "0",
            f"{c0:.3f}", f"{lag:g} ({1000 * lag / fps_cat:.0f} ms)",
            f"{b0:.3f}", f"{blag:g} ({1000 * blag / fps_cat:.0f} ms)",
        ])  # fmt: skip
    print(markdown_table(
        ["--smooth (s)", "flicker (mean abs Δ map / frame)", "flicker vs off", "top-1 switches (at frames)",
         "peak x ~ cat x: corr", "peak x: lag, frames", "20 % box centre ~ cat x: corr", "box centre: lag, frames"],
        rows,
    ))  # fmt: skip
    print()

    def dominant(r: dict, lo: int, hi: int) -> str:
        values, counts = np.unique(r["classes"][lo:hi], return_counts=True)
        order = np.argsort(-counts)
        return ", ".join(f"{names[values[i]]} {counts[i]}" for i in order[:3])

    for tau in taus:
        r = cat[tau]
        print(f"- smooth {tau:g}: shown classes, cat part: {dominant(r, 0, CAT_FRAMES)}; "
              f"cup part: {dominant(r, CAT_FRAMES, len(r['classes']))}")  # fmt: skip
    print(f"- the cat leaves and the cup enters at frame {CAT_FRAMES}: one switch there is right, a later one is "
          "the label's lag; a positive map lag means the map shows where the cat was that many frames earlier")  # fmt: skip
    print()
    print(f"### Temporal smoothing: flicker on real footage ({args.flicker_video.name}, "
          f"{bbb[taus[0]]['peak_x'].size} frames at {fps_bbb:.0f} fps)")  # fmt: skip
    print()
    off = bbb[taus[0]]["flicker"] if taus[0] == 0 else None
    rows = []
    for tau in taus:
        r = bbb[tau]
        rows.append([f"{tau:g}", f"{100 * r['flicker']:.2f} %", f"{r['flicker'] / off:.2f}x" if off else "-",
                     len(r["switches"]), dominant(r, 0, len(r["classes"]))])  # fmt: skip
    print(markdown_table(["--smooth (s)", "flicker (mean abs Δ map / frame)", "flicker vs off", "top-1 switches",
                          "shown classes (frames)"], rows))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
