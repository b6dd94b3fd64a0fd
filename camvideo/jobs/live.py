"""A live session: one source, the model, the overlay, a display slot and a recorder.

    source ─▶ latest frame ─▶ render thread ─▶ display slot ─▶ GUI (or any consumer)
                               │      ▲                   └──▶ recorder (MP4)
                         every Nth   held model output
                               ▼      │
                            model thread (newest frame wins)

With ``every=1`` every frame is explained before it is shown (the display runs at the
model's rate). With ``every=N>1`` the model runs in its own thread on every Nth frame,
the newest one when it is busy, and every frame is drawn at once with the last model
output, smoothing going on per frame: the display keeps the camera's rate on a slow
CPU and the map follows a few frames behind. ``every=0`` (auto, the default) picks
between the two, and N, from the measured model and drawing times
(:mod:`camvideo.jobs.pacing`). The model thread is the only one that touches the
:class:`~camvideo.engine.Explainer`.

A background model runs with fewer torch threads (``LiveOptions.model_threads``), so one
core is left to decode, draw and display. torch's thread count is process-wide for every
thread that starts running torch later, so the session puts it back when the model
returns in step and when the session ends.

All threads come from :mod:`camvideo.pipeline`; this module only wires them. Settings
changed in the GUI reach the render thread through a one-item
:class:`~camvideo.pipeline.DropOldest`, and are
applied between frames by the thread that owns what they change.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ..engine import Explainer
from ..errors import CamvideoError, ModelError, OutputError
from ..pipeline import DropOldest, LatestWorker, Pipeline, Task
from ..render import Renderer, TemporalSmoother
from ..sources import LiveSource, open_live_source
from ..types import Frame, FrameResult
from .live_stage import LiveAnnotator, ModelThreads
from .pacing import AUTO_START, EveryAuto
from .recording import Recording
from .settings import LiveOptions, target_of
from .stage import warm_up

__all__ = ["LiveSession", "LiveStats"]


log = logging.getLogger(__name__)


@dataclass
class LiveStats:
    """A snapshot for the status bar."""

    state: str
    status: str  # the source's: live, reconnecting ..., ended
    frames_read: int
    frames_shown: int
    dropped: int  # stale frames never drawn + drawn frames never displayed
    model_runs: int
    model_ms: float  # mean time of one model run
    device: str
    recording: Path | None
    recorded: int
    every: int = 1  # the model's frame interval now
    every_auto: bool = False  # picked by --every auto (camvideo.jobs.pacing)


# The model thread runs jobs: functions of nothing. Everything that touches the
# Explainer is such a job, so the Explainer is only ever used from that one thread.
def _run_job(job: Callable[[], object]) -> object:
    return job()


_DEFAULT_OPTIONS = LiveOptions()  # frozen: one shared default value


class LiveSession:
    """Run a live source through the model into :attr:`display` until :meth:`stop`.

    ``source``: a SOURCE spec for :func:`~camvideo.live.open_live_source` (None: first
    camera, else the sample), or an opened :class:`LiveSource` (the session closes it).
    ``explainer``: reuse a loaded model (it must match ``options.model_key()``); the
    session never closes an explainer it was given. ``on_frame`` is the display slot's
    doorbell (see :class:`~camvideo.pipeline.DropOldest`). ``after``: a previous session
    to wait for before touching the shared explainer.

    Everything slow (opening the camera, loading the model) happens in the session's
    own thread after :meth:`start`; :attr:`state` goes opening → running → ended /
    failed / stopped, and :attr:`error` holds what failed.
    """

    def __init__(
        self,
        source: str | LiveSource | None,
        options: LiveOptions = _DEFAULT_OPTIONS,
        *,
        explainer: Explainer | None = None,
        on_frame: Callable[[], None] | None = None,
        loop: bool = True,
        after: LiveSession | None = None,
    ) -> None:
        self.options = options
        self.display: DropOldest[FrameResult] = DropOldest(1, on_frame)
        self.state = "opening"
        self.error: BaseException | None = None
        self.notice = ""  # a message for the user that is not fatal (a method that cannot be used)
        self.source: LiveSource | None = source if isinstance(source, LiveSource) else None
        self.explainer: Explainer | None = explainer
        self.annotator: LiveAnnotator | None = None
        self.frames_shown = 0
        self._spec = source
        self._loop = loop
        self._after = after
        self.owns_explainer = explainer is None  # close it when the session ends
        self._settings: DropOldest[LiveOptions] = DropOldest(1)
        self._pipeline: Pipeline | None = None
        self._worker: LatestWorker | None = None
        self._recorder: Recording | None = None
        self._stopping = False
        self._threads = ModelThreads(0)  # torch's threads for the model (set when the model is loaded)
        #: ``every=0`` (auto): the measured times and the interval they call for; else None
        self.pacing: EveryAuto | None = None
        self._task: Task[None] = Task(self._main, "camvideo-live")

    # -- control (GUI thread) -------------------------------------------------------------------
    def start(self) -> LiveSession:
        self._task.start()
        return self

    def configure(self, options: LiveOptions) -> None:
        """Apply new options from the next frame on (redrawing the frame when paused).

        A different model, weights, layer, device or precision needs a new session.
        """
        if options.model_key() != self.options.model_key():
            raise ValueError("a different model needs a new LiveSession")
        self.options = options
        self._settings.put(options)
        if self.source is not None and self.source.paused:
            self.source.replay()

    def pause(self) -> None:
        """Hold the picture. The frame shown is drawn once more, with its own map and any
        settings changed since it was drawn."""
        if self.source is not None:
            self.source.pause()
            self.source.replay()

    def resume(self) -> None:
        if self.source is not None:
            self.source.resume()

    def step(self) -> None:
        if self.source is not None:
            if not self.source.paused:
                self.source.pause()
            self.source.step()

    @property
    def paused(self) -> bool:
        return self.source is not None and self.source.paused

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop every thread of the session and release the source; True when all ended
        within ``timeout`` seconds. A recording in progress is finished first."""
        self._stopping = True
        deadline = time.monotonic() + timeout
        self.stop_recording()
        if self._pipeline is not None:
            self._pipeline.stop()
        if self.source is not None:
            self.source.close()
        if self._worker is not None:
            self._worker.stop(max(0.0, deadline - time.monotonic()))
        ended = self._task.join(max(0.0, deadline - time.monotonic()))
        if self.state in ("opening", "running"):
            self.state = "stopped"
        return ended and self.threads_alive() == []

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the session to end by itself (a file that does not loop)."""
        return self._task.join(timeout)

    def threads_alive(self) -> list[str]:
        threads = [self._task.thread]
        if self._worker is not None:
            threads.append(self._worker.thread)
        if self._pipeline is not None:
            threads += self._pipeline.threads
        if self._recorder is not None:
            threads += self._recorder.threads
        return [t.name for t in threads if t.is_alive()]

    # -- recording ------------------------------------------------------------------------------
    def start_recording(self, path: str | Path, crf: int = 23, preset: str = "veryfast") -> Path:
        """Record the overlay (as displayed) to an MP4 from the next frame on, with the
        source's audio where it has one. Raises OutputError for a path that cannot be used."""
        if self._recorder is not None:
            raise OutputError(f"already recording to {self._recorder.path}")
        if self.source is None or self.state != "running":
            raise OutputError("nothing to record yet: the source is not open")
        self._recorder = Recording(Path(path), self.source, crf=crf, preset=preset)
        return self._recorder.path

    def stop_recording(self) -> Path | None:
        """Finish the recording; its path, or None when there was none or it failed
        (the reason then is in :attr:`notice`)."""
        recorder, self._recorder = self._recorder, None
        if recorder is None:
            return None
        try:
            return recorder.finish()
        except CamvideoError as err:
            self.notice = str(err)
            return None

    @property
    def recording(self) -> Path | None:
        return self._recorder.path if self._recorder is not None else None

    # -- the session thread -----------------------------------------------------------------------
    def _main(self) -> None:
        try:
            self._open()
            if self._stopping:
                return
            assert self._pipeline is not None
            self.state = "running"
            self._pipeline.run()
            self.state = "ended" if not self._stopping else "stopped"
        except BaseException as err:  # noqa: BLE001 - reported through state/error
            if self._stopping:  # a consequence of stop(): the model thread or the source went first
                self.state = "stopped"
                log.debug("live session stopped with %r", err)
            else:
                self.error, self.state = err, "failed"
                log.debug("live session failed", exc_info=True)
        finally:
            if self.source is not None:
                self.source.close()
            if self._worker is not None:
                self._worker.stop(2.0)
            self._threads.restore()  # the model thread is done: later threads get the count back
            self.stop_recording()  # a file that ended: its recording is complete
            if self.owns_explainer and self.explainer is not None:
                self.explainer.close()

    def _open(self) -> None:
        if self._after is not None:
            self._after.stop(5.0)  # its model thread must be done with the shared explainer
        if self.source is None:
            self.source = open_live_source(self._spec, loop=self._loop)  # type: ignore[arg-type]
        if self._stopping:
            return
        options = self.options
        if self.explainer is None:
            self.explainer = Explainer.from_options(options.model_options())
        elif self.explainer.method != options.method:
            self.explainer.set_method(options.method)
        try:
            self.explainer.selector(target_of(options.target))
        except ModelError as err:  # a saved class that this model does not have: top-1, and say so
            self.notice = f"{err}; showing the top-1 class"
            options = self.options = dataclasses.replace(options, target="top1")
        # A compiled runtime takes torch's thread count when it compiles for the frame size,
        # and keeps it: it compiles first, with all threads (in step the model wants them);
        # the background limit on torch's threads then leaves it as it is.
        cpu = self.explainer.device.type == "cpu"
        compiled = cpu and getattr(self.explainer, "backend", "torch") != "torch"
        self._threads = ModelThreads(options.model_threads, enabled=cpu, model_follows=not compiled)
        self.pacing = self._new_pacing() if options.every == 0 else None
        every = self.pacing.every if self.pacing is not None else options.every
        self.annotator = LiveAnnotator(self.explainer, self._renderer(options), TemporalSmoother(options.smooth),
                                        target_of(options.target), every=every)  # fmt: skip
        self._applied = options
        self._worker = LatestWorker(_run_job, "camvideo-model").start()
        if compiled:  # compile (or load from the cache) now, not on the first frame shown
            self._worker.call(partial(warm_up, self.annotator, self.source.info.height, self.source.info.width))
        self.annotator.on_model_time = self._model_timed
        if every > 1 or compiled:  # (a compiled runtime's torch share is limited in step too)
            self._worker.call(partial(self._threads.background, True))
        source = self.source
        self._pipeline = Pipeline(source, self._process, self._publish, batch_size=4, policy="live",
                                  live_depth=1, close_source=source.close)  # fmt: skip

    def _renderer(self, o: LiveOptions) -> Renderer:
        assert self.explainer is not None
        return Renderer(o.colormap, o.alpha, boxes=o.boxes, labels=o.labels, threshold=o.threshold,
                        side_by_side=o.side_by_side, class_names=self.explainer.class_names,
                        min_score=o.min_score)  # fmt: skip

    def _new_pacing(self, start: int = AUTO_START) -> EveryAuto:
        """``--every auto``'s state, expecting the model in step faster by its threads' ratio."""
        return EveryAuto(start=start, thread_ratio=self._threads.ratio())

    def _model_timed(self, seconds: float, frames: int) -> None:
        """The annotator's model time (model thread): for ``--every auto``."""
        if self.pacing is not None:
            self.pacing.model(seconds, frames, background=self._threads.limited)

    # -- render thread ------------------------------------------------------------------------------
    def _apply_settings(self) -> None:
        new = self._settings.take()
        if new is None or self.annotator is None:
            return
        old, ann = self._applied, self.annotator
        self._applied = new
        if new.method != old.method:
            self.notice = self._model_call(partial(_set_method, self.explainer, new.method)) or ""
        if (new.colormap, new.alpha, new.boxes, new.labels, new.threshold, new.side_by_side, new.min_score) != (
            old.colormap, old.alpha, old.boxes, old.labels, old.threshold, old.side_by_side, old.min_score
        ):  # fmt: skip
            ann.renderer = self._renderer(new)
        if new.smooth != old.smooth:
            smoother = TemporalSmoother(new.smooth)
            ann.smoother = smoother if smoother.enabled else None
        if new.target != old.target:
            try:
                target = target_of(new.target)
                assert self.explainer is not None
                self.explainer.selector(target)
                ann.target = target
            except ModelError as err:
                self.notice = str(err)
        if new.every != old.every:
            self.pacing = self._new_pacing(start=max(ann.every, 1)) if new.every == 0 else None
            self._set_every(self.pacing.every if self.pacing is not None else new.every)
        if (new.smooth, new.target) != (old.smooth, old.target):
            ann.reset()  # the held map is for the old target; the smoother's state too

    def _set_every(self, every: int) -> None:
        ann = self.annotator
        assert ann is not None
        if every != ann.every:
            background = (every > 1, ann.every > 1)
            ann.every = every
            if background[0] != background[1]:
                self._model_call(partial(self._threads.background, every > 1))

    def _in_step(self, frames: Sequence[Frame]) -> Callable[[], object]:
        """The model thread's job for frames in step: explain and draw them; for ``--every
        auto``, the drawing's time (the job's less the model's) is reported too."""
        ann, auto = self.annotator, self.pacing
        assert ann is not None
        if auto is None:
            return partial(ann, frames)

        def run() -> object:
            start, model_before = time.perf_counter(), auto.model_total
            results = ann(frames)
            auto.render(time.perf_counter() - start - (auto.model_total - model_before), len(frames))
            return results

        return run

    def _model_call(self, job: Callable[[], object]) -> object:
        assert self._worker is not None
        return self._worker.call(job)

    def _process(self, frames: Sequence[Frame]) -> list[FrameResult]:
        self._apply_settings()
        ann, worker = self.annotator, self._worker
        assert ann is not None and worker is not None
        if self.pacing is not None:
            self.pacing.frames([f.time for f in frames])
            self._set_every(self.pacing.choice())
        if ann.every <= 1:
            return self._model_call(self._in_step(frames))  # type: ignore[return-value]
        if worker.error is not None:
            raise worker.error
        landed = worker.results.take()
        if landed is not None:
            ann.adopt(landed)  # type: ignore[arg-type]
        for frame in frames:
            if frame.extra.get("replay"):
                ann.reset()
            if ann.due(frame):
                job = partial(ann.explain_frame, frame)
                if ann.held is None or frame.extra.get("replay") or frame.extra.get("step"):
                    ann.adopt(self._model_call(job))  # type: ignore[arg-type]  # must be drawn with its own map
                else:
                    worker.submit(job)
        start = time.perf_counter()
        results = ann.render_held(frames)
        if self.pacing is not None:
            self.pacing.render(time.perf_counter() - start, len(frames))
        return results

    def _publish(self, result: FrameResult) -> None:
        self.frames_shown += 1
        self.display.put(result)
        recorder = self._recorder
        if recorder is not None and not result.frame.extra.get("replay"):
            recorder.put(result)

    # -- status ---------------------------------------------------------------------------------------
    def stats(self) -> LiveStats:
        pipeline, worker, source, recorder = self._pipeline, self._worker, self.source, self._recorder
        runs = worker.runs if worker is not None else 0
        return LiveStats(
            state=self.state,
            status=source.status if source is not None else "opening",
            frames_read=pipeline.stats.frames_read if pipeline is not None else 0,
            frames_shown=self.frames_shown,
            dropped=(pipeline.frames_dropped if pipeline is not None else 0) + self.display.dropped,
            model_runs=runs,
            model_ms=1000 * worker.busy / runs if worker is not None and runs else 0.0,
            device=str(self.explainer.device) if self.explainer is not None else "",
            recording=recorder.path if recorder is not None else None,
            recorded=recorder.frames if recorder is not None else 0,
            every=self.annotator.every if self.annotator is not None else 1,
            every_auto=self.pacing is not None,
        )


def _set_method(explainer: Explainer | None, method: str) -> str | None:
    """Switch the CAM method in the model thread; the message when it cannot be used."""
    assert explainer is not None
    try:
        explainer.set_method(method)
    except ModelError as err:
        return str(err)
    return None
