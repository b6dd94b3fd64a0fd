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

__all__ = ["LiveAnnotator", "ModelThreads"]


class LiveAnnotator(FrameAnnotator):
    """A :class:`FrameAnnotator` that can also draw with a model run made elsewhere."""

    def explain_frame(self, frame: Frame) -> ModelOutput:
        """One model run for the live background worker (the only thread using the model).

        For a smoothed top-1 target it explains the frame's top class and also the class
        the smoother wants to show, when they differ, so the render thread has the map of
        whichever it settles on.
        """
        target = self.target
        if self.smoother is not None and self.top1:
            wanted = self.wanted_class

            def target(logits: torch.Tensor) -> torch.Tensor:
                top = logits.argmax(dim=1, keepdim=True)
                if wanted is None or wanted == int(top[0, 0]):
                    return top
                return torch.cat([torch.full_like(top, wanted), top], dim=1)

        images = self.explainer.to_device(frame.image[None])
        return self.model_outputs([frame], self.explain(images, target))[0]

    def adopt(self, output: ModelOutput) -> None:
        """Draw the next frames with ``output`` (a background run that has finished)."""
        self.held = output

    def render_held(self, frames: Sequence[Frame]) -> list[FrameResult]:
        """Draw frames with the held model run, smoothing on (render thread, live)."""
        held = self.held
        if held is None:
            raise RuntimeError("render_held() before any model output was adopted")
        times = [f.time for f in frames]
        positions = [0] * len(frames)
        if self.smoother is not None and self.top1:
            chosen = self.smoother.select(held.logits.expand(len(frames), -1), times).tolist()
            for i, wanted in enumerate(chosen):
                self.wanted_class = wanted
                # Show the wanted class when its map is here; else keep the one shown.
                show = wanted if wanted in held.classes else self.shown_class
                positions[i] = held.classes.index(show) if show in held.classes else 0
                self.shown_class = held.classes[positions[i]]
        images = self.explainer.to_device(np.stack([f.image for f in frames]))
        return self.render_runs(frames, images, [held] * len(frames), positions)


class ModelThreads:
    """torch's CPU threads for a live model: fewer while it runs in the background (one
    core left to decode, draw and display), all of them back in step and at the end.

    torch's count is process-wide for every thread that starts running torch later, so a
    limit that is never put back leaks into the next session (and its model in step).
    :meth:`limit` runs in the model thread; :meth:`restore` in it, or in any thread once
    the model thread is done. ``limit=0`` (or a GPU): leave torch's count as it is.

    ``model_follows=False``: the network runs on a compiled runtime whose threads were fixed
    when it compiled. torch's share (preprocessing, the maps, the drawing) then keeps the
    limit in step too: more torch threads would only wait at their barriers for the cores
    the runtime, the decoder and the window hold; and the model is not expected to run
    faster in step (:meth:`ratio` is 1).
    """

    def __init__(self, limit: int, enabled: bool = True, model_follows: bool = True) -> None:
        self.limit_to = limit if enabled else 0
        self.model_follows = model_follows
        self.before: int | None = None  # the count before the limit; None: not limited now

    @property
    def limited(self) -> bool:
        return self.before is not None

    def ratio(self) -> float:
        """How many times faster the model is expected in step than in the background: threads
        in step over threads in the background (1 when nothing limits the model's threads)."""
        if self.limit_to <= 0 or not self.model_follows:
            return 1.0
        threads = self.before or torch.get_num_threads()
        return threads / min(threads, self.limit_to)

    def background(self, on: bool) -> None:
        """The limit for a background model (``on``), or all threads back for one in step."""
        if self.limit_to <= 0 or (not on and not self.model_follows):
            return  # nothing to limit; or a compiled runtime's torch share, limited in step too
        if not on:
            self.restore()
            return
        if self.before is None:
            self.before = torch.get_num_threads()
        torch.set_num_threads(min(self.before, self.limit_to))

    def restore(self) -> None:
        before, self.before = self.before, None
        if before is not None:
            torch.set_num_threads(before)
