"""Overlay rendering: raw maps + frames in, annotated uint8 frames out.

Everything up to the finished frame runs on the maps' device: bilinear upsampling to
the frame size, normalisation to [0, 1], a 256-entry colormap lookup, alpha blending.
The box rule of Zhou et al. (threshold the normalised map at 20 % of its maximum, keep
the largest connected component, take its bounding box) and the label text run on
the host frame with OpenCV, which has the connected-components and text routines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CamvideoError
from ..types import Box
from .transfer import FrameDownloader

# OpenCV's own colormaps, so that "jet" is exactly COLORMAP_JET (tested against an
# independent JET formula); their names are camvideo.options.COLORMAP_NAMES.
COLORMAPS = {
    "jet": cv2.COLORMAP_JET,
    "turbo": cv2.COLORMAP_TURBO,
    "inferno": cv2.COLORMAP_INFERNO,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "magma": cv2.COLORMAP_MAGMA,
    "plasma": cv2.COLORMAP_PLASMA,
    "hot": cv2.COLORMAP_HOT,
}


@cache
def colormap_lut(name: str) -> np.ndarray:
    """The (256, 3) uint8 RGB table of a colormap, read once from OpenCV."""
    key = name.strip().lower()
    if key not in COLORMAPS:
        raise CamvideoError(f"unknown colormap {name!r}; one of: {', '.join(COLORMAPS)}")
    ramp = np.arange(256, dtype=np.uint8).reshape(1, 256)
    bgr = cv2.applyColorMap(ramp, COLORMAPS[key])[0]
    return np.ascontiguousarray(bgr[:, ::-1])


def normalize_maps(maps: torch.Tensor, bounds: torch.Tensor | None = None, clamp: bool = True) -> torch.Tensor:
    """Min-max normalise each map (N, h, w) to [0, 1], or with given (N, 2) [low, high] bounds
    (values outside them are clamped unless ``clamp`` is False).

    A constant map (high == low) becomes all zeros: nothing is hot.
    """
    maps = maps.float()
    if bounds is None:
        low = maps.amin(dim=(-2, -1), keepdim=True)
        high = maps.amax(dim=(-2, -1), keepdim=True)
    else:
        low = bounds[:, 0].float().view(-1, 1, 1)
        high = bounds[:, 1].float().view(-1, 1, 1)
    span = high - low
    safe = torch.where(span > 0, span, torch.ones_like(span))
    out = torch.where(span > 0, (maps - low) / safe, torch.zeros_like(maps))
    return out.clamp_(0.0, 1.0) if clamp else out


def largest_component_box(mask: np.ndarray, connectivity: int = 8) -> Box | None:
    """Bounding box of the largest connected component of a boolean mask, None if empty."""
    if not mask.any():
        return None
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=connectivity)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(v) for v in stats[best, :4])
    return (x, y, x + w, y + h)


def cam_box(normalized: np.ndarray, threshold: float = 0.2, connectivity: int = 8) -> Box | None:
    """The seeds' box rule on a normalised map at frame resolution (any scale, e.g. the
    0..255 colormap index): pixels above ``threshold`` × max, the largest connected
    component, its bounding box."""
    peak = float(normalized.max()) if normalized.size else 0.0
    if peak <= 0:
        return None
    return largest_component_box(normalized > threshold * peak, connectivity)


def cam_box_reduced(
    index: np.ndarray, threshold: float = 0.2, connectivity: int = 8, step: int | None = None
) -> Box | None:
    """:func:`cam_box` at a fraction of its cost, for big frames.

    The connected components (the costly part: 4-12 ms on a 720p index) are found on a
    ``step`` times smaller index, each pixel of which is the maximum of a ``step`` x
    ``step`` block (default: blocks of about 1/180 of the short side): a block is hot
    when any of its pixels is, so the largest component lies inside the blocks of the
    reduced box. Each edge is then found exactly on the full-resolution index, inside
    that box and in the component's own blocks. The result equals the full-resolution
    box unless two hot regions come within a block of each other (tested on the
    model's maps of real frames and on random blob maps: within two pixels).
    """
    height, width = index.shape[:2]
    if step is None:
        step = max(1, min(height, width) // 180)
    if step <= 1:
        return cam_box(index, threshold, connectivity)
    # max over each step x step block: a dilation anchored at its top-left, sampled
    pooled = cv2.dilate(index, np.ones((step, step), np.uint8), anchor=(0, 0),
                        borderType=cv2.BORDER_CONSTANT, borderValue=0)[::step, ::step]  # fmt: skip
    peak = float(pooled.max()) if pooled.size else 0.0
    if peak <= 0:
        return None
    level = threshold * peak
    _, labels, stats, _ = cv2.connectedComponentsWithStats((pooled > level).view(np.uint8), connectivity=connectivity)
    areas = stats[1:, cv2.CC_STAT_AREA]
    best_hot, best_count, x_lo, y_lo = None, -1, 0, 0
    # A component's block count only bounds its pixel count: the candidates that could be
    # the largest are counted exactly, in their own blocks (another hot region beside
    # them, in other blocks, does not count).
    for label in 1 + np.flatnonzero(areas * step * step >= areas.max()):
        bx, by, bw, bh = (int(v) for v in stats[label, :4])
        x0, y0 = bx * step, by * step
        x1, y1 = min(width, (bx + bw) * step), min(height, (by + bh) * step)
        blocks = (labels[by : by + bh, bx : bx + bw] == label).view(np.uint8)
        mine = cv2.resize(blocks, (bw * step, bh * step), interpolation=cv2.INTER_NEAREST)[: y1 - y0, : x1 - x0]
        hot = (index[y0:y1, x0:x1] > level) & mine.view(bool)
        count = int(np.count_nonzero(hot))
        if count > best_count:
            best_hot, best_count, x_lo, y_lo = hot, count, x0, y0
    hot = best_hot
    rows = np.flatnonzero(hot.any(axis=1))
    cols = np.flatnonzero(hot.any(axis=0))
    return (x_lo + int(cols[0]), y_lo + int(rows[0]), x_lo + int(cols[-1]) + 1, y_lo + int(rows[-1]) + 1)


@dataclass
class Rendered:
    """A rendered batch: host uint8 RGB frames and one box (or None) per frame
    (computed whether or not it is drawn)."""

    images: np.ndarray  # (N, H, W', 3); W' = 2W when side by side; each images[i] C-contiguous
    boxes: list[Box | None]


class Renderer:
    """Turns frames and raw maps into annotated frames.

    ``alpha`` is the heatmap's weight: out = alpha·heat + (1 − alpha)·frame, rounded.
    ``threshold`` is the box rule's fraction of the map's maximum. ``min_score``: below
    this probability of the shown class the model is unsure (common on footage outside
    ImageNet): the label is drawn grey with "unsure:" and no box is drawn, instead of a
    confident green box around whatever the map's hottest region is. The box is still
    computed (the records carry it).
    """

    def __init__(
        self,
        colormap: str = "jet",
        alpha: float = 0.5,
        *,
        boxes: bool = True,
        labels: bool = True,
        threshold: float = 0.2,
        side_by_side: bool = False,
        class_names: Sequence[str] | None = None,
        backend: str = "auto",
        min_score: float = 0.0,
    ) -> None:
        if backend not in ("auto", "torch", "opencv"):
            raise ValueError(f"backend must be auto, torch or opencv, not {backend!r}")
        if not 0.0 <= alpha <= 1.0:
            raise CamvideoError(f"alpha must be between 0 and 1, not {alpha}")
        if not 0.0 <= threshold < 1.0:
            raise CamvideoError(f"box threshold must be in [0, 1), not {threshold}")
        if not 0.0 <= min_score <= 1.0:
            raise CamvideoError(f"min score must be between 0 and 1, not {min_score}")
        self.min_score = float(min_score)
        self.colormap = colormap
        self.lut_host = colormap_lut(colormap)
        self.alpha = float(alpha)
        self.boxes = boxes
        self.labels = labels
        self.threshold = float(threshold)
        self.side_by_side = side_by_side
        self.class_names = list(class_names) if class_names is not None else None
        self.backend = backend  # auto: OpenCV for CPU tensors, torch on other devices
        self._lut: dict[torch.device, torch.Tensor] = {}
        self._downloaders: dict[torch.device, FrameDownloader] = {}

    def copy(self) -> Renderer:
        """The same settings with buffers of its own: one per thread that renders at once."""
        return Renderer(self.colormap, self.alpha, boxes=self.boxes, labels=self.labels, threshold=self.threshold,
                        side_by_side=self.side_by_side, class_names=self.class_names, backend=self.backend,
                        min_score=self.min_score)  # fmt: skip

    def _downloader(self, device: torch.device) -> FrameDownloader:
        if device not in self._downloaders:
            self._downloaders[device] = FrameDownloader(device)
        return self._downloaders[device]

    def lut(self, device: torch.device) -> torch.Tensor:
        if device not in self._lut:
            self._lut[device] = torch.from_numpy(self.lut_host).to(device)
        return self._lut[device]

    def heat(self, index: torch.Tensor) -> torch.Tensor:
        """Colour uint8/long colormap indices (N, H, W): (N, H, W, 3) uint8 on their device."""
        return self.lut(index.device)[index.long()]

    def overlay(
        self, frames: torch.Tensor, maps: torch.Tensor, bounds: torch.Tensor | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Blend heat over the frames: host uint8 images (N, H, W', 3) and the colormap
        index maps (N, H, W) uint8 that the box rule reads.

        index = round(clamp(bilinear_up(255 · (m − lo) / (hi − lo)), 0, 255)); normalising
        before upsampling is the same map (bilinear interpolation is affine) at a
        fraction of the work. On the CPU the per-pixel work is OpenCV's (SIMD, several
        times faster than torch's CPU kernels); elsewhere it is torch on the device.
        Both give the same pixels (tested).
        """
        scaled = normalize_maps(maps, bounds, clamp=bounds is None) * 255.0
        if self.backend == "opencv" or (self.backend == "auto" and frames.device.type == "cpu"):
            return self._overlay_opencv(frames.cpu().numpy(), scaled.cpu().numpy())
        n, height, width, _ = frames.shape
        up = F.interpolate(scaled.unsqueeze(1), size=(height, width), mode="bilinear", align_corners=False)[:, 0]
        index = up.clamp_(0.0, 255.0).round_().to(torch.uint8)
        if self.alpha == 0.0:
            blended = frames
        else:
            blended = (
                (self.alpha * self.heat(index).float() + (1.0 - self.alpha) * frames.float()).round_().to(torch.uint8)
            )
        if self.side_by_side:
            blended = torch.cat([frames, blended], dim=2)
        # One device -> host copy per batch: each frame's row holds its image, then its
        # colormap index (for the box rule). On the host both are views of that row, each
        # frame's image C-contiguous, so no strided copy is needed to split them.
        panel = blended.shape[2]
        size = height * panel * 3
        packed = torch.empty((n, size + height * width), dtype=torch.uint8, device=blended.device)
        packed[:, :size] = blended.reshape(n, size)
        packed[:, size:] = index.reshape(n, height * width)
        host = self._downloader(packed.device).download(packed)
        return host[:, :size].reshape(n, height, panel, 3), host[:, size:].reshape(n, height, width)

    def indices(self, maps: torch.Tensor, height: int, width: int, bounds: torch.Tensor | None = None) -> np.ndarray:
        """The colormap index maps (N, H, W) uint8 of :meth:`overlay`, without the overlay
        (``annotate --no-video``): the same numbers by the same kernels, so the same boxes."""
        scaled = normalize_maps(maps, bounds, clamp=bounds is None) * 255.0
        if self.backend == "opencv" or (self.backend == "auto" and maps.device.type == "cpu"):
            scaled_host = scaled.cpu().numpy()
            out = np.empty((len(scaled_host), height, width), np.uint8)
            for i in range(len(scaled_host)):
                up = cv2.resize(scaled_host[i], (width, height), interpolation=cv2.INTER_LINEAR)
                np.clip(up, 0.0, 255.0, out=up)
                cv2.convertScaleAbs(up, out[i])
            return out
        up = F.interpolate(scaled.unsqueeze(1), size=(height, width), mode="bilinear", align_corners=False)[:, 0]
        return up.clamp_(0.0, 255.0).round_().to(torch.uint8).cpu().numpy()

    def boxes_only(self, frames: torch.Tensor, maps: torch.Tensor, bounds: torch.Tensor | None = None) -> Rendered:
        """The boxes :meth:`render` would give, and no images (``images`` is a list of None)."""
        indices = self.indices(maps, frames.shape[1], frames.shape[2], bounds)
        return Rendered(images=[None] * len(indices), boxes=[cam_box_reduced(ix, self.threshold) for ix in indices])

    def _overlay_opencv(self, frames: np.ndarray, scaled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, height, width, _ = frames.shape
        out_width = 2 * width if self.side_by_side else width
        images = np.empty((n, height, out_width, 3), np.uint8)
        indices = np.empty((n, height, width), np.uint8)
        lut = self.lut_host.reshape(256, 1, 3)
        for i in range(n):
            up = cv2.resize(scaled[i], (width, height), interpolation=cv2.INTER_LINEAR)
            np.clip(up, 0.0, 255.0, out=up)
            cv2.convertScaleAbs(up, indices[i])  # round half to even, as torch.round
            target = images[i, :, width:] if self.side_by_side else images[i]
            if self.alpha == 0.0:
                target[:] = frames[i]
            else:
                heat = cv2.applyColorMap(indices[i], lut)
                cv2.addWeighted(heat, self.alpha, frames[i], 1.0 - self.alpha, 0.0, dst=target)
            if self.side_by_side:
                images[i, :, :width] = frames[i]
        return images, indices

    def render(
        self,
        frames: torch.Tensor,
        maps: torch.Tensor,
        classes: torch.Tensor | None = None,
        scores: torch.Tensor | Sequence[float] | None = None,
        bounds: torch.Tensor | None = None,
        labels: Sequence[str] | None = None,
    ) -> Rendered:
        """Blend, box and label a batch. ``frames``: uint8 (N, H, W, 3) on the maps' device;
        ``maps``: raw (N, h, w); ``classes``/``scores``: (N,) for the labels, or ``labels``
        to give the label texts directly. ``scores`` (the shown class's probability per
        frame) also decides, against ``min_score``, which frames are drawn as unsure."""
        images, indices = self.overlay(frames, maps, bounds)
        boxes: list[Box | None] = [None] * len(images)
        score_list = (
            (scores.tolist() if isinstance(scores, torch.Tensor) else list(scores))
            if scores is not None
            else [None] * len(images)
        )
        if labels is None and self.labels and classes is not None:
            labels = [self.label_text(c, s) for c, s in zip(classes.tolist(), score_list)]
        offset = frames.shape[2] if self.side_by_side else 0
        for i, image in enumerate(images):
            boxes[i] = cam_box_reduced(indices[i], self.threshold)  # always: the records carry it
            unsure = self.unsure(score_list[i])
            if self.boxes and boxes[i] is not None and not unsure:
                draw_box(image[:, offset:], boxes[i])  # the overlay panel only
            if self.labels and labels is not None:
                draw_label(image, labels[i], color=UNSURE_GREY if unsure else (255, 255, 255))
        return Rendered(images=images, boxes=boxes)

    def unsure(self, score: float | None) -> bool:
        """The shown class's probability is below ``min_score``."""
        return score is not None and score < self.min_score

    def label_text(self, class_index: int, score: float | None) -> str:
        name = (
            self.class_names[class_index]
            if self.class_names and 0 <= class_index < len(self.class_names)
            else f"class {class_index}"
        )
        text = f"{name} {score:.0%}" if score is not None else name
        return f"unsure: {text}" if self.unsure(score) else text


def draw_box(image: np.ndarray, box: Box, color: tuple[int, int, int] = (0, 255, 0)) -> None:
    """Draw a rectangle in place; thickness scales with the frame."""
    thickness = max(1, round(min(image.shape[:2]) / 240))
    x0, y0, x1, y1 = box
    cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), color, thickness, lineType=cv2.LINE_8)


#: The label's colour when the model is unsure (below ``min_score``).
UNSURE_GREY = (150, 150, 150)


def draw_label(image: np.ndarray, text: str, color: tuple[int, int, int] = (255, 255, 255)) -> None:
    """Text (white, or grey when unsure) on a dark band in the top-left corner, sized to the frame."""
    height = image.shape[0]
    scale = max(0.35, height / 720 * 0.9)
    thickness = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(2, round(th * 0.35))
    cv2.rectangle(image, (0, 0), (min(image.shape[1] - 1, tw + 2 * pad), th + base + 2 * pad), (0, 0, 0), -1)
    cv2.putText(image, text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)
