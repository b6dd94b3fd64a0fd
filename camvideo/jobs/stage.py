"""The engine stage: a batch of decoded frames in, annotated frames and their records out.

It ties the :class:`~camvideo.engine.Explainer`, the
:class:`~camvideo.render.TemporalSmoother` and the :class:`~camvideo.render.Renderer` together for one stream of frames. uint8 frames go
to the device once; preprocessing, the model, the maps, smoothing, upsampling, the
colormap and the blend all happen there, and only the finished frame comes back.

With ``every=N`` the model runs on every Nth frame only; the frames between are drawn
with the last run's map and class (a :class:`ModelOutput`), and smoothing goes on at
every frame, so the overlay moves at the frame rate. Live, the model can also run in a
background thread: :class:`~camvideo.jobs.live_stage.LiveAnnotator` adds that mode.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..engine import Explainer, Explanation, Target
from ..render import Renderer, TemporalSmoother
from ..types import Frame, FrameResult

__all__ = ["FrameAnnotator", "ModelOutput", "warm_up"]


@dataclass
class ModelOutput:
    """One model run on one frame: what the frames until the next run are drawn with.

    ``maps`` (T, h, w) are raw maps for ``classes`` (T targets; live top-1 runs may add
    the class currently shown, so a class switch has its map ready).
    """

    logits: torch.Tensor  # (C,) float32
    maps: torch.Tensor  # (T, h, w) float32
    classes: list[int]
    scores: list[float]
    top5: list[tuple[int, float]]
    frame_index: int
    frame_time: float


class FrameAnnotator:
    """Explain, smooth and render batches of frames from one stream, in order.

    ``target`` is as for :meth:`Explainer.explain`. With the default top-1 target and a
    smoother, the class shown follows the smoother's hysteresis. With ``top{k}`` the
    overlay shows the first target's map and the label lists all k classes.

    ``draw=False`` skips the overlay (colormap, blend, box, label): the results carry
    the same records (classes, scores, box, maps) with ``image`` None.

    ``static_batch=B`` pads every shorter batch (a video's last) to B frames with copies
    of its last frame before the model and drops the copies after it, so a compiled
    model (``Explainer(compile=True)``) sees one input shape per video and never
    recompiles; the smoother and the results see only the real frames.
    """

    def __init__(
        self,
        explainer: Explainer,
        renderer: Renderer,
        smoother: TemporalSmoother | None = None,
        target: Target = None,
        keep_maps: bool = False,
        every: int = 1,
        static_batch: int | None = None,
        draw: bool = True,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be at least 1, not {every}")
        if static_batch is not None and static_batch < 1:
            raise ValueError(f"static_batch must be at least 1, not {static_batch}")
        self.static_batch = static_batch
        self.explainer = explainer
        self.renderer = renderer
        self.smoother = smoother if smoother is not None and smoother.enabled else None
        self.keep_maps = keep_maps
        self.draw = draw  # False: boxes and records only, no overlay images (annotate --no-video)
        self.every = every
        if renderer.class_names is None:
            renderer.class_names = explainer.class_names
        self.target = target
        self._held: ModelOutput | None = None  # the last model run, drawn until the next
        self._countdown = 0  # frames to go until the model runs again
        #: The class the smoother picked last (smoothed top-1; live runs also explain it).
        self.wanted_class: int | None = None
        #: The class whose map is drawn now (smoothed top-1).
        self.shown_class: int | None = None
        #: Called with (seconds, frames) after each model call: the model alone, without
        #: smoothing and drawing (``--every auto`` compares it with the frame interval).
        self.on_model_time: Callable[[float, int], None] | None = None

    @property
    def target(self) -> Target:
        return self._target

    @target.setter
    def target(self, target: Target) -> None:
        self._target = target
        self._top1 = target is None or (isinstance(target, str) and target.strip().lower() in ("top1", "top"))
        self._multi = isinstance(target, str) and target.strip().lower().startswith("top") and not self._top1

    @property
    def top1(self) -> bool:
        """Whether the target is the top-1 class (the one the smoother's hysteresis can hold)."""
        return self._top1

    @property
    def held(self) -> ModelOutput | None:
        """The model run the next frames between runs are drawn with."""
        return self._held

    @held.setter
    def held(self, output: ModelOutput | None) -> None:
        self._held = output

    def explain(self, images: torch.Tensor, target: Target) -> Explanation:
        """``explainer.explain`` on device ``images``, its time reported to :attr:`on_model_time`."""
        start = time.perf_counter()
        out = self.explainer.explain(images, target=target)
        if self.on_model_time is not None:
            self.on_model_time(time.perf_counter() - start, images.shape[0])
        return out

    def reset(self) -> None:
        """Forget the smoothing state and the last model run (a new video, a new source)."""
        if self.smoother is not None:
            self.smoother.reset()
        self._held = None
        self._countdown = 0
        self.wanted_class = self.shown_class = None

    def due(self, frame: Frame) -> bool:
        """Whether the model should run on ``frame`` (counts it: call once per frame, in order).

        Every ``every``-th frame is due, starting with the first; a step or a replay
        (``extra["step"]``/``["replay"]``, while paused) always is.
        """
        if self._countdown <= 0 or frame.extra.get("step") or frame.extra.get("replay"):
            self._countdown = self.every - 1
            return True
        self._countdown -= 1
        return False

    def __call__(self, frames: Sequence[Frame]) -> list[FrameResult]:
        if not frames:
            return []
        if any(f.extra.get("replay") for f in frames):
            self.reset()  # a redraw with new settings: start the smoothing afresh, or it hides them
        if self.every > 1:
            return self._explain_some(frames)
        return self._explain_all(frames)

    def _explain_all(self, frames: Sequence[Frame]) -> list[FrameResult]:
        """Every frame through the model (``every=1``)."""
        times = [f.time for f in frames]
        images = self.explainer.to_device(np.stack([f.image for f in frames]))
        target = self.target
        if self.smoother is not None and self._top1:
            smoother = self.smoother
            target = lambda logits: smoother.select(logits, times)  # noqa: E731
        out = self._explain_padded(images, target)
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
        rendered = (self.renderer.render(images, shown, bounds=bounds, labels=labels, scores=[ps[0] for ps in score_rows])
                    if self.draw else self.renderer.boxes_only(images, shown, bounds))  # fmt: skip
        top5 = out.probabilities.topk(min(5, out.logits.shape[1]), dim=1)
        top_idx, top_p = top5.indices.tolist(), top5.values.tolist()
        raw = maps.float().cpu().numpy() if self.keep_maps else None
        last = len(frames) - 1  # held, should `every` change, and for live background runs
        self._held = ModelOutput(out.logits[last], maps[last].float(), class_rows[last], score_rows[last],
                                 list(zip(top_idx[last], top_p[last])), frames[last].index, frames[last].time)  # fmt: skip
        self._countdown = self.every - 1
        self.wanted_class = self.shown_class = class_rows[last][0]
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
                    smoothed=self.smoother is not None and self._top1,
                )
            )
        return results

    def _explain_padded(self, images: torch.Tensor, target: Target) -> Explanation:
        """``explainer.explain``, padded to ``static_batch`` frames when that is set."""
        n = images.shape[0]
        extra = (self.static_batch or 0) - n
        if extra <= 0:
            return self.explain(images, target)
        padded = torch.cat([images, images[-1:].expand(extra, -1, -1, -1)])
        if callable(target) and not isinstance(target, torch.Tensor):
            chooser = target

            def target(logits: torch.Tensor) -> torch.Tensor:  # the real frames' choice only
                chosen = torch.as_tensor(chooser(logits[:n]), device=logits.device).long().view(n, -1)
                return torch.cat([chosen, chosen[-1:].expand(extra, -1)])

        out = self.explain(padded, target)
        return dataclasses.replace(out, maps=out.maps[:n], classes=out.classes[:n], scores=out.scores[:n],
                                   logits=out.logits[:n])  # fmt: skip

    # -- every Nth frame -------------------------------------------------------------------------
    def model_outputs(self, frames: Sequence[Frame], out: Explanation) -> list[ModelOutput]:
        """One :class:`ModelOutput` per frame of an explained batch."""
        maps = out.maps if out.maps.dim() == 4 else out.maps.unsqueeze(1)  # (N, T, h, w)
        classes = out.classes.view(len(frames), -1).tolist()
        scores = out.scores.view(len(frames), -1).tolist()
        top5 = out.probabilities.topk(min(5, out.logits.shape[1]), dim=1)
        top_idx, top_p = top5.indices.tolist(), top5.values.tolist()
        return [
            ModelOutput(
                out.logits[i], maps[i].float(), classes[i], scores[i], list(zip(top_idx[i], top_p[i])), f.index, f.time
            )  # fmt: skip
            for i, f in enumerate(frames)
        ]

    def _explain_some(self, frames: Sequence[Frame]) -> list[FrameResult]:
        """The model on the due frames only; the others drawn with the run before them."""
        times = [f.time for f in frames]
        due = [self.due(f) for f in frames]
        picked = [i for i, d in enumerate(due) if d]
        images = self.explainer.to_device(np.stack([f.image for f in frames]))
        smoother = self.smoother if self._top1 else None
        outputs: dict[int, ModelOutput] = {}
        if picked:
            target = self.target
            if smoother is not None:
                held = self._held

                def target(logits: torch.Tensor) -> torch.Tensor:
                    # The class EMA sees every frame: a due frame's own logits, the others
                    # the last run's (what the map shown on them is), so its clock is right.
                    rows, last, j = [], held.logits if held is not None else None, 0
                    for i in range(len(frames)):
                        if due[i]:
                            last, j = logits[j], j + 1
                        rows.append(last)
                    chosen = smoother.select(torch.stack(rows), times)
                    return chosen[picked]

            explained = self.explain(images[picked], target)
            outputs = dict(zip(picked, self.model_outputs([frames[i] for i in picked], explained)))
        elif smoother is not None and self._held is not None:
            smoother.select(self._held.logits.expand(len(frames), -1), times)
        runs = []
        for i in range(len(frames)):
            self._held = outputs.get(i, self._held)
            runs.append(self._held)
        return self.render_runs(frames, images, runs, [0] * len(frames))

    def render_runs(
        self, frames: Sequence[Frame], images: torch.Tensor, runs: list[ModelOutput], positions: list[int]
    ) -> list[FrameResult]:
        """Smooth and render frames (``images``: on the device), each with its model run's
        map at ``positions[i]`` (the run's ``classes[positions[i]]``)."""
        times = [f.time for f in frames]
        shown = torch.stack([run.maps[p] for run, p in zip(runs, positions)])
        bounds = None
        if self.smoother is not None and not self._multi:
            shown, bounds = self.smoother.smooth(shown, times)
        picked = [
            (run.classes, run.scores) if self._multi else ([run.classes[p]], [run.scores[p]])
            for run, p in zip(runs, positions)
        ]
        labels = [" | ".join(self.renderer.label_text(c, s) for c, s in zip(cs, ss)) for cs, ss in picked]
        rendered = (self.renderer.render(images, shown, bounds=bounds, labels=labels, scores=[ss[0] for _, ss in picked])
                    if self.draw else self.renderer.boxes_only(images, shown, bounds))  # fmt: skip
        results = []
        for i, (frame, run) in enumerate(zip(frames, runs)):
            results.append(
                FrameResult(
                    frame=frame,
                    image=rendered.images[i],
                    classes=picked[i][0],
                    scores=picked[i][1],
                    box=rendered.boxes[i],
                    top5=run.top5,
                    raw_map=run.maps.cpu().numpy() if self.keep_maps else None,
                    extra={"model_frame": run.frame_index, "model_lag": frame.time - run.frame_time},
                    smoothed=self.smoother is not None and self._top1,
                )
            )
        return results


def warm_up(annotator: FrameAnnotator, height: int, width: int) -> None:
    """One throwaway batch so that first-call costs (allocations, kernels) leave the timings."""
    blank = Frame(index=0, image=np.zeros((height, width, 3), np.uint8), pts=0, time=0.0)
    annotator([blank])
    annotator.reset()
