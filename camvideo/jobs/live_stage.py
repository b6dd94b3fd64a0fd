"""The stage for a live session whose model runs in a background thread.

:class:`LiveAnnotator` is a :class:`~camvideo.jobs.FrameAnnotator` with a third way of
working: the model thread calls :meth:`LiveAnnotator.explain_frame` on the newest due
frame, the render thread :meth:`LiveAnnotator.adopt` s the run when it lands and draws
every frame with :meth:`LiveAnnotator.render_held`, so a slow model never holds a frame
back. With the smoothed top-1 target, a run also explains the class the smoother wants
to show, so a class switch has its map ready.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..types import Frame, FrameResult
from .stage import FrameAnnotator, ModelOutput

__all__ = ["LiveAnnotator"]


class LiveAnnotator(FrameAnnotator):
    """A :class:`FrameAnnotator` that can also draw with a model run made elsewhere."""

    def explain_frame(self, frame: Frame) -> ModelOutput:
        """One model run for the live background worker (the only thread using the model).

        For a smoothed top-1 target it explains the frame's top class and also the class
        the smoother wants to show, when they differ, so the render thread has the map of
        whichever it settles on.
        """
        target = self.target
        if self.smoother is not None and self._top1:
            wanted = self._wanted

            def target(logits: torch.Tensor) -> torch.Tensor:
                top = logits.argmax(dim=1, keepdim=True)
                if wanted is None or wanted == int(top[0, 0]):
                    return top
                return torch.cat([torch.full_like(top, wanted), top], dim=1)

        images = self.explainer.to_device(frame.image[None])
        return self._outputs([frame], self.explainer.explain(images, target=target))[0]

    def adopt(self, output: ModelOutput) -> None:
        """Draw the next frames with ``output`` (a background run that has finished)."""
        self._held = output

    def render_held(self, frames: Sequence[Frame]) -> list[FrameResult]:
        """Draw frames with the held model run, smoothing on (render thread, live)."""
        held = self._held
        if held is None:
            raise RuntimeError("render_held() before any model output was adopted")
        times = [f.time for f in frames]
        positions = [0] * len(frames)
        if self.smoother is not None and self._top1:
            chosen = self.smoother.select(held.logits.expand(len(frames), -1), times).tolist()
            for i, wanted in enumerate(chosen):
                self._wanted = wanted
                # Show the wanted class when its map is here; else keep the one shown.
                show = wanted if wanted in held.classes else self._shown
                positions[i] = held.classes.index(show) if show in held.classes else 0
                self._shown = held.classes[positions[i]]
        images = self.explainer.to_device(np.stack([f.image for f in frames]))
        return self._draw(frames, images, [held] * len(frames), positions)
