"""A picture of a whole video: one PNG with what the model saw from start to end.

:class:`ReportWriter` follows the writers' protocol (``open`` → ``write(result)`` per
frame → ``close`` or ``abort``) and draws, at close, with matplotlib (the optional extra
matplotlib; only the Agg canvas, never pyplot, so it is safe in a sink thread):

- **top classes over time**: the softmax probability of the classes with the highest
  mean probability over the video (from each frame's top-5; a class outside a frame's
  top-5 counts 0 there, its probability being below the fifth's), on an axis scaled to
  the highest probability drawn (:func:`probability_axis_top`: 0.1 at least), so a video
  whose classes all stay under 10 % is not a flat line at the bottom;
- **where the heat is**: the centre of mass of the frame's raw map ``M`` (the model's
  map of the first target at feature resolution, e.g. 7x13, *before* temporal smoothing),
  min-max normalised over that frame alone, ``N = (M - min M) / (max M - min M)``:
  ``x = Σ N_ij (j + ½) / (w Σ N_ij)`` and ``y = Σ N_ij (i + ½) / (h Σ N_ij)`` over the
  map's ``h × w`` cells, so 0 is the left/top edge of the frame and 1 the right/bottom.
  The overlay draws something else: the temporally smoothed map, normalised with the
  smoothed bounds and upsampled to the frame; the two agree only with ``--smooth 0``
  (and then up to the upsampling);
- **thumbnails** of the overlay at regular times (the frame nearest each time).

Memory stays flat: per frame five (class, probability) pairs and two floats, and at most
``4 × thumbnails`` small images (a grid of times that doubles its spacing when full).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..errors import CamvideoError, OutputError
from ..types import FrameResult
from .base import Writer, describe_os_error, temporary_beside

__all__ = ["ReportWriter", "heat_centre", "probability_axis_top", "report_path"]

THUMB_WIDTH = 240  # pixels of each kept thumbnail (drawn smaller or equal)
FEW_FRAMES = 20  # up to this many frames, each is marked on the plots (a 1-frame line draws nothing)
PROBABILITY_FLOOR = 0.1  # the probability axis never ends below 10 %: a 2 % class must not fill the plot


def report_path(video: Path) -> Path:
    """Where the report of an annotated video goes by default: ``NAME.cam.mp4`` -> ``NAME.cam.report.png``."""
    return video.with_name(video.stem + ".report.png")


def heat_centre(raw_map: np.ndarray) -> tuple[float, float]:
    """Centre of mass (x, y) of the min-max normalised map, in fractions of the frame (0..1).

    ``raw_map`` is (h, w) or (k, h, w) (the first target's map is used). A flat map has
    no heat to locate: (nan, nan).
    """
    m = np.asarray(raw_map, dtype=np.float64)
    if m.ndim == 3:
        m = m[0]
    span = m.max() - m.min()
    if not np.isfinite(span) or span <= 0:
        return float("nan"), float("nan")
    n = (m - m.min()) / span
    h, w = n.shape
    total = n.sum()
    x = float((n.sum(axis=0) * (np.arange(w) + 0.5)).sum() / (w * total))
    y = float((n.sum(axis=1) * (np.arange(h) + 0.5)).sum() / (h * total))
    return x, y


def probability_axis_top(peak: float) -> float:
    """The top of the probability axis: ``peak`` plus 10 % headroom, rounded up to 0.05,
    at least :data:`PROBABILITY_FLOOR` and at most 1."""
    if not np.isfinite(peak) or peak <= 0:
        return PROBABILITY_FLOOR
    return float(min(1.0, max(PROBABILITY_FLOOR, np.ceil(round(peak * 1.1 / 0.05, 9)) * 0.05)))


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CamvideoError(
            "the report needs matplotlib: pip install matplotlib (or '.[report]' in camvideo's clone)"
        ) from None


class _Grow:
    """A numpy buffer that grows by doubling (rows appended one at a time)."""

    def __init__(self, width: int, dtype: type) -> None:
        self.data = np.zeros((256, width), dtype)
        self.n = 0

    def append(self, row: Sequence[float]) -> None:
        if self.n == len(self.data):
            self.data = np.concatenate([self.data, np.zeros_like(self.data)])
        self.data[self.n, : len(row)] = row
        self.n += 1

    @property
    def rows(self) -> np.ndarray:
        return self.data[: self.n]


class ReportWriter(Writer):
    """One PNG per video: top classes over time, the heat's centre of mass, thumbnails.

    ``title`` heads the picture (the video's name by default). ``top`` classes are drawn;
    ``thumbnails`` overlay images in a row. After :meth:`close`, :attr:`panels` holds each
    drawn element's pixel box ``(x0, y0, x1, y1)`` in the PNG (``timeline``, ``heat``,
    ``thumb0``...) and :attr:`thumbnail_times` the times of the frames shown, so a test can
    look at exactly what was drawn.
    """

    def __init__(self, path: str | os.PathLike, class_names: Sequence[str], *, title: str | None = None,
                 top: int = 5, thumbnails: int = 6) -> None:  # fmt: skip
        super().__init__(path)
        _require_matplotlib()
        self.class_names = list(class_names)
        self.title = title if title is not None else self.path.name
        self.top = top
        self.thumbnails = max(1, thumbnails)
        self.panels: dict[str, tuple[int, int, int, int]] = {}
        self.thumbnail_times: list[float] = []
        self.probability_top = 1.0  # the probability axis's upper limit, set when drawn
        self._times = _Grow(1, np.float64)
        self._classes = _Grow(5, np.int64)
        self._probs = _Grow(5, np.float32)
        self._centres = _Grow(2, np.float64)
        self._kept: dict[int, tuple[float, np.ndarray]] = {}  # grid slot -> (time, thumbnail)
        self._spacing = 0.25  # seconds between grid slots; doubles when more than 2x thumbnails
        self.open()

    # -- the protocol ---------------------------------------------------------------------
    def _open(self) -> None:
        self._temp = temporary_beside(self.path, ".png")

    def _write(self, result: FrameResult) -> None:
        t = float(result.frame.time)
        self._times.append([t])
        top5 = list(result.top5)[:5]
        self._classes.append([c for c, _ in top5] + [-1] * (5 - len(top5)))
        self._probs.append([p for _, p in top5] + [0.0] * (5 - len(top5)))
        self._centres.append(heat_centre(result.raw_map) if result.raw_map is not None else (np.nan, np.nan))
        slot = int(t // self._spacing)
        if slot not in self._kept:
            self._kept[slot] = (t, self._thumbnail(result.image))
            while len(self._kept) > 4 * self.thumbnails:  # keep a regular grid: coarsen it
                self._spacing *= 2
                coarse: dict[int, tuple[float, np.ndarray]] = {}
                for kept_t, image in sorted(self._kept.values(), key=lambda v: v[0]):
                    coarse.setdefault(int(kept_t // self._spacing), (kept_t, image))
                self._kept = coarse

    def _finish(self) -> Path:
        try:
            self._draw(self._temp)
            os.replace(self._temp, self.path)
        except OSError as err:
            raise OutputError(
                f"{self.path}: cannot write the report ({describe_os_error(err)}); nothing was saved"
            ) from err
        return self.path

    def _unlink_partial(self) -> None:
        self._temp.unlink(missing_ok=True)

    def _discard(self) -> None:
        self._temp.unlink(missing_ok=True)

    # -- drawing ----------------------------------------------------------------------------
    @staticmethod
    def _thumbnail(image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if w <= THUMB_WIDTH:
            return np.array(image, copy=True)
        size = (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w)))
        return cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_AREA)

    def top_classes(self) -> list[tuple[int, np.ndarray]]:
        """The ``top`` classes by mean probability, each with its probability per frame."""
        classes, probs = self._classes.rows, self._probs.rows
        n = len(classes)
        totals: dict[int, float] = {}
        for c, p in zip(classes.ravel().tolist(), probs.ravel().tolist()):
            if c >= 0:
                totals[c] = totals.get(c, 0.0) + p
        best = sorted(totals, key=lambda c: -totals[c])[: self.top]
        return [(c, np.where(classes == c, probs, 0.0).sum(axis=1) if n else np.zeros(0)) for c in best]

    def _chosen_thumbnails(self) -> list[tuple[float, np.ndarray]]:
        """The kept frames nearest the middles of ``thumbnails`` equal parts of the video."""
        kept = sorted(self._kept.values(), key=lambda v: v[0])
        if len(kept) <= self.thumbnails:
            return kept
        times = self._times.rows[:, 0]
        start, end = float(times.min()), float(times.max())
        kept_times = np.array([t for t, _ in kept])
        picks: list[int] = []
        for k in range(self.thumbnails):
            target = start + (k + 0.5) * (end - start) / self.thumbnails
            order = np.argsort(np.abs(kept_times - target), kind="stable")
            picks.append(next((int(i) for i in order if int(i) not in picks), int(order[0])))
        return [kept[i] for i in sorted(picks)]

    def _draw(self, target: Path) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        times = self._times.rows[:, 0]
        thumbs = self._chosen_thumbnails()
        self.thumbnail_times = [t for t, _ in thumbs]
        aspect = thumbs[0][1].shape[0] / thumbs[0][1].shape[1] if thumbs else 9 / 16
        width_in, dpi = 12.0, 100
        thumb_h = width_in / max(len(thumbs), 1) * aspect + 0.35
        fig = Figure(figsize=(width_in, 1.0 + 2.6 + 1.9 + thumb_h), dpi=dpi)
        FigureCanvasAgg(fig)
        grid = fig.add_gridspec(3, 1, height_ratios=[2.6, 1.9, thumb_h], hspace=0.45, left=0.07, right=0.8,
                                top=1 - 0.7 / fig.get_figheight(), bottom=0.02)  # fmt: skip
        frames = len(times)
        span = f"{times[0]:.1f}-{times[-1]:.1f} s" if frames else "no frames"
        fig.suptitle(f"{self.title}: {frames} frames, {span}", fontsize=12)

        # a line through one frame (or a few) is nothing to see: mark each frame then
        points = {"marker": "o", "markersize": 5} if frames <= FEW_FRAMES else {}
        timeline = fig.add_subplot(grid[0])
        top_classes = self.top_classes()
        for k, (c, series) in enumerate(top_classes):
            name = self.class_names[c] if 0 <= c < len(self.class_names) else str(c)
            timeline.plot(times, series, color=f"C{k}", lw=1.6, label=f"{name} (mean {series.mean():.0%})", **points)
        peak = max((float(series.max()) for _, series in top_classes if len(series)), default=0.0)
        self.probability_top = probability_axis_top(peak)
        timeline.set_ylim(0, self.probability_top)
        timeline.set_ylabel("probability")
        timeline.set_title("top classes over time", fontsize=10, loc="left")
        if frames:
            timeline.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)

        heat = fig.add_subplot(grid[1], sharex=timeline)
        centres = self._centres.rows
        heat.plot(times, centres[:, 0], color="C0", lw=1.6, label="x (0 left, 1 right)", **points)
        heat.plot(times, centres[:, 1], color="C3", lw=1.6, label="y (0 top, 1 bottom)", **points)
        heat.set_ylim(0, 1)
        heat.set_ylabel("centre of heat")
        heat.set_xlabel("time (s)")
        heat.set_title("where the heat is: its centre of mass", fontsize=10, loc="left")
        heat.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        for t in self.thumbnail_times:
            for ax in (timeline, heat):
                ax.axvline(t, color="0.75", lw=0.8, zorder=0)
        if frames > 1:
            timeline.set_xlim(times[0], times[-1])

        row = grid[2].subgridspec(1, max(len(thumbs), 1), wspace=0.04)
        thumb_axes = []
        for i, (t, image) in enumerate(thumbs):
            ax = fig.add_subplot(row[0, i])
            ax.imshow(image, interpolation="antialiased")
            ax.set_axis_off()
            ax.set_title(f"{t:.1f} s", fontsize=8)
            thumb_axes.append(ax)
        # the thumbnails span the full width, not the plots' (the plots leave room for legends)
        fig.canvas.draw()
        for i, ax in enumerate(thumb_axes):
            pos = ax.get_position()
            n = len(thumb_axes)
            cell = (0.98 - 0.02) / n
            ax.set_position([0.02 + i * cell + (cell - cell * 0.97) / 2, pos.y0, cell * 0.97, pos.height])
        fig.canvas.draw()
        height = fig.bbox.height
        named = {"timeline": timeline, "heat": heat} | {f"thumb{i}": ax for i, ax in enumerate(thumb_axes)}
        for name, ax in named.items():
            if name.startswith("thumb"):
                box = ax.get_images()[0].get_window_extent()  # the image as drawn (aspect kept)
            else:
                box = ax.get_window_extent()
            self.panels[name] = (round(box.x0), round(height - box.y1), round(box.x1), round(height - box.y0))
        fig.savefig(target, format="png", dpi=dpi)
