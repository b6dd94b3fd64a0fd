"""``--every auto``: the live model's frame interval, picked from measured times.

A live session either explains every frame before showing it (``every=1``, *in step*: the
render thread runs the model and then draws, so the display runs at their rate) or runs
the model in a background thread on every Nth frame (``every=N>1``: every frame is shown
at once with the last map). ``auto`` chooses from running measurements of like things:

- the model's time per frame, alone (never the drawing), in each mode: in step it runs
  with all of torch's threads, in the background with fewer (one core is left to decode,
  draw and display), so the two are kept apart. The mode not running now is estimated:
  its last measurement, scaled by how much the running mode's time has changed since
  (a machine that has become busier or quieter slows or speeds both); before it has been
  measured, from the running mode's time and the ratio of their threads;
- the drawing's time per frame (smoothing, colormap, blend: the render thread's share);
- the source's frame interval.

Then:

- ``every = 1`` when a frame in step (model + drawing) takes at most :data:`STEP_SHARE`
  of a frame interval: each frame gets its own map and the display keeps the camera's rate;
- otherwise ``every = max(2, ceil(1.25 × background model time / frame interval))``: the
  model runs in the background about 80 % of the time (the other 20 % is headroom for the
  cores that decode, draw and display), and the display keeps the camera's rate.

The measurements are exponential moving averages (weight 0.2 per sample) so one slow
run (a garbage collection, another user's burst) does not flip the choice; it changes
only after :data:`SETTLE_RUNS` model runs since the last change, or at once when the
model has become more than twice as slow or fast as the choice assumed.

The step between 1 and 2 changes torch's thread limit, so it has a band around
:data:`STEP_SHARE`: from ``every > 1`` down to 1 only when a step would take at most
:data:`DOWN_TO_ONE` frame intervals, from 1 up only above :data:`UP_FROM_ONE` (a time near
the boundary with some jitter flipped the choice every few frames without it).

Frame intervals of a second or more (a pause, a loop back to the start) are not counted
while shorter ones come; a source that is always that slow (a time-lapse camera) is paced
by its long intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["AUTO_START", "DOWN_TO_ONE", "STEP_SHARE", "UP_FROM_ONE", "EveryAuto", "auto_every"]

#: The interval ``auto`` starts with: the model in the background, so frames are shown
#: from the first one on while the first runs are measured.
AUTO_START = 2
HEADROOM = 1.25
#: In step (``every=1``) when model + drawing take at most this share of a frame interval.
STEP_SHARE = 1 / HEADROOM
SETTLE_RUNS = 4
#: The band around the 1 <-> 2 boundary (:data:`STEP_SHARE`), in frame intervals of a step.
DOWN_TO_ONE, UP_FROM_ONE = 0.7, 0.9
#: Frame intervals this long or longer are a pause or a loop, unless no shorter one comes.
LONG_GAP = 1.0
_WEIGHT = 0.2


def auto_every(
    step_seconds: float, frame_seconds: float, background_seconds: float | None = None, headroom: float = HEADROOM
) -> int:
    """The model interval at one frame every ``frame_seconds``, for a frame in step that
    takes ``step_seconds`` (model and drawing) and a background model run that takes
    ``background_seconds`` per frame (None: the same as ``step_seconds``)."""
    if frame_seconds <= 0 or step_seconds <= frame_seconds / headroom * (1 + 1e-9):  # 1e-9: float rounding
        return 1
    model = step_seconds if background_seconds is None else background_seconds
    return max(2, math.ceil(headroom * model / frame_seconds))


class EveryAuto:
    """Running measurements and the interval they call for (one per live session).

    :meth:`frames` is fed by the render thread, :meth:`model` and :meth:`render` by
    whichever thread ran the model or drew (the float assignments are atomic under the GIL;
    a stale read only delays a change by a frame).

    ``thread_ratio``: how many times faster the model is expected to run in step than in
    the background (torch's threads in step over the background limit), until both have
    been measured.
    """

    def __init__(self, start: int = AUTO_START, thread_ratio: float = 1.0) -> None:
        self.every = start
        self.thread_ratio = max(1.0, float(thread_ratio))
        self.step_model: float | None = None  # model seconds per frame, in step (all threads)
        self.background_model: float | None = None  # ... in the background (limited threads)
        self.render_seconds = 0.0  # drawing per frame (render thread)
        self.model_total = 0.0  # seconds in the model so far (to take it out of a step's time)
        self._in_step = False  # the last model run was in step
        self._background_then: float | None = None  # background_model when step_model was last measured
        self._step_then: float | None = None  # step_model when background_model was last measured
        self._short: float | None = None  # frame interval from intervals under LONG_GAP
        self._long: float | None = None  # ... from longer ones
        self._last_time: float | None = None
        self._runs_since_change = 0

    # -- measurements ---------------------------------------------------------------------------
    def frames(self, times: Sequence[float]) -> None:
        """Frame presentation times (seconds), in order."""
        for t in times:
            if self._last_time is not None and t > self._last_time:
                gap = t - self._last_time
                if gap < LONG_GAP:
                    self._short = _ema(self._short, gap)
                else:
                    self._long = _ema(self._long, gap)
            self._last_time = t

    def model(self, seconds: float, frames: int = 1, background: bool = False) -> None:
        """One model run of ``seconds`` for ``frames`` frames, the model alone; ``background``:
        with the background thread limit."""
        if seconds > 0 and frames > 0:
            self.model_total += seconds
            self._in_step = not background
            # the other mode's last time, and this mode's time then (the first measured
            # here, when this mode had none yet): the pair its estimates scale from
            if background:
                self.background_model = _ema(self.background_model, seconds / frames)
                self._step_then = self.step_model
                if self._background_then is None and self.step_model is not None:
                    self._background_then = self.background_model
            else:
                self.step_model = _ema(self.step_model, seconds / frames)
                self._background_then = self.background_model
                if self._step_then is None and self.background_model is not None:
                    self._step_then = self.step_model
            self._runs_since_change += 1

    def render(self, seconds: float, frames: int = 1) -> None:
        """The render thread's drawing (without the model) of ``frames`` frames took ``seconds``."""
        if seconds >= 0 and frames > 0:
            self.render_seconds = _ema(self.render_seconds if self.render_seconds else None, seconds / frames)

    # -- estimates --------------------------------------------------------------------------------
    @property
    def frame_seconds(self) -> float | None:
        """The source's frame interval (None until two frames have come)."""
        return self._short if self._short is not None else self._long

    @property
    def step_model_now(self) -> float | None:
        """The model's time per frame in step: measured while in step, else estimated."""
        if self._in_step or self.background_model is None:
            return self.step_model
        if self.step_model is None or not self._background_then:
            return self.background_model / self.thread_ratio
        return self.step_model * self.background_model / self._background_then

    @property
    def model_seconds(self) -> float | None:
        """The model's time per frame in the background (what the interval N is made from):
        measured while there, else estimated."""
        if not self._in_step or self.step_model is None:
            return self.background_model
        if self.background_model is None or not self._step_then:
            return self.step_model * self.thread_ratio
        return self.background_model * self.step_model / self._step_then

    @property
    def speedup(self) -> float:
        """How many times faster the model runs in step than in the background, now."""
        step, background = self.step_model_now, self.model_seconds
        return background / step if step and background else self.thread_ratio

    @property
    def step_seconds(self) -> float | None:
        """A frame in step: the model with all threads, then the drawing."""
        model = self.step_model_now
        return None if model is None else model + self.render_seconds

    def choice(self) -> int:
        """The interval to use now (``every`` updated when it should change)."""
        step, frame, model = self.step_seconds, self.frame_seconds, self.model_seconds
        if step is None or frame is None or model is None:
            return self.every
        want = auto_every(step, frame, model)
        ratio = step / frame if frame > 0 else 0.0
        if self.every == 1 and ratio <= UP_FROM_ONE:
            want = 1  # inside the band: stay in step
        elif self.every > 1 and want == 1 and ratio > DOWN_TO_ONE:
            want = 2  # inside the band: stay in the background
        if want != self.every:
            # more than twice as slow or fast as the choice assumed (for the step to or
            # from 1: twice past the band's edge)
            far = want > 2 * self.every or 2 * want < self.every
            far = far or (want == 1 and ratio < DOWN_TO_ONE / 2) or (self.every == 1 and ratio > 2 * UP_FROM_ONE)
            if far or self._runs_since_change >= SETTLE_RUNS:
                self.every, self._runs_since_change = want, 0
        return self.every


def _ema(old: float | None, new: float) -> float:
    return new if old is None else old + _WEIGHT * (new - old)
