"""The engine stage: a batch of decoded frames in, annotated frames and their records out.

It ties the :class:`~camvideo.engine.Explainer`, the :class:`TemporalSmoother` and the
:class:`~camvideo.render.Renderer` together for one stream of frames. uint8 frames go
to the device once; preprocessing, the model, the maps, smoothing, upsampling, the
colormap and the blend all happen there, and only the finished frame comes back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .engine.explainer import Explainer, Target
from .render import Box, Renderer
from .smoothing import TemporalSmoother
from .video import Frame


@dataclass
class FrameResult:
    """One annotated frame and what the model said about it."""

    frame: Frame  # the source frame (its image is the original)
    image: np.ndarray  # annotated uint8 RGB
    classes: list[int]  # the class(es) the map is for: one, or k for top-k targets
    scores: list[float]  # their softmax probabilities
    box: Box | None
    top5: list[tuple[int, float]]
    raw_map: np.ndarray | None = None  # (T, h', w') float32 raw maps, when kept
    extra: dict = field(default_factory=dict)

    @property
    def class_index(self) -> int:
        return self.classes[0]

    @property
    def score(self) -> float:
        return self.scores[0]


class FrameAnnotator:
    """Explain, smooth and render batches of frames from one stream, in order.

    ``target`` is as for :meth:`Explainer.explain`. With the default top-1 target and a
    smoother, the class shown follows the smoother's hysteresis. With ``top{k}`` the
    overlay shows the first target's map and the label lists all k classes.
    """

    def __init__(
        self,
        explainer: Explainer,
        renderer: Renderer,
        smoother: TemporalSmoother | None = None,
        target: Target = None,
        keep_maps: bool = False,
    ) -> None:
        self.explainer = explainer
        self.renderer = renderer
        self.smoother = smoother if smoother is not None and smoother.enabled else None
        self.target = target
        self.keep_maps = keep_maps
        if renderer.class_names is None:
            renderer.class_names = explainer.class_names
        self._top1 = target is None or (isinstance(target, str) and target.strip().lower() in ("top1", "top"))

    def reset(self) -> None:
        """Forget the smoothing state (a new video, a new source)."""
        if self.smoother is not None:
            self.smoother.reset()

    def __call__(self, frames: Sequence[Frame]) -> list[FrameResult]:
        if not frames:
            return []
        times = [f.time for f in frames]
        images = self.explainer.to_device(np.stack([f.image for f in frames]))
        target = self.target
        if self.smoother is not None and self._top1:
            smoother = self.smoother
            target = lambda logits: smoother.select(logits, times)  # noqa: E731
        out = self.explainer.explain(images, target=target)
        maps = out.maps if out.maps.dim() == 4 else out.maps.unsqueeze(1)  # (N, T, h, w)
        classes = out.classes.view(len(frames), -1)
        scores = out.scores.view(len(frames), -1)
        shown = maps[:, 0]
        bounds = None
        if self.smoother is not None and maps.shape[1] == 1:
            shown, bounds = self.smoother.smooth(shown, times)
        class_rows, score_rows = classes.tolist(), scores.tolist()
        labels = [
            " | ".join(self.renderer.label_text(c, p) for c, p in zip(cs, ps)) for cs, ps in zip(class_rows, score_rows)
        ]
        rendered = self.renderer.render(images, shown, bounds=bounds, labels=labels)
        top5 = out.probabilities.topk(min(5, out.logits.shape[1]), dim=1)
        top_idx, top_p = top5.indices.tolist(), top5.values.tolist()
        raw = maps.float().cpu().numpy() if self.keep_maps else None
        results = []
        for i, frame in enumerate(frames):
            results.append(
                FrameResult(
                    frame=frame,
                    image=rendered.images[i],
                    classes=class_rows[i],
                    scores=score_rows[i],
                    box=rendered.boxes[i],
                    top5=list(zip(top_idx[i], top_p[i])),
                    raw_map=raw[i] if raw is not None else None,
                )
            )
        return results


def warm_up(annotator: FrameAnnotator, height: int, width: int) -> None:
    """One throwaway batch so that first-call costs (allocations, kernels) leave the timings."""
    blank = Frame(index=0, image=np.zeros((height, width, 3), np.uint8), pts=0, time=0.0)
    annotator([blank])
    annotator.reset()
