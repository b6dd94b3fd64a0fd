"""``--every auto``: the live model's frame interval, picked from measured times.

A live session either explains every frame before showing it (``every=1``: the display
runs at the model's rate) or runs the model in a background thread on every Nth frame
(``every=N>1``: every frame is shown at once with the last map). ``auto`` chooses from
two running measurements, the model's time per frame and the source's frame interval:

- ``every = 1`` when the model takes at most half a frame interval (a GPU, a small
  model): each frame gets its own map and the display still keeps the camera's rate;
- otherwise ``every = max(2, ceil(1.25 × model time / frame interval))``: the model runs
  in the background about 80 % of the time (the other 20 % is headroom for the cores
  that decode, draw and display), and the display keeps the camera's rate.

Both measurements are exponential moving averages (weight 0.2 per sample) so one slow
run (a garbage collection, another user's burst) does not flip the choice; it changes
only after :data:`SETTLE_RUNS` model runs since the last change, or at once when the
model has become more than twice as slow or fast as the choice assumed.

The step between 1 and 2 changes torch's thread limit, so it has a band around the half
frame interval: from ``every > 1`` down to 1 only below :data:`DOWN_TO_ONE` frame
intervals, from 1 up only above :data:`UP_FROM_ONE` (a model time near the half with some
jitter flipped the choice every few frames without it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["AUTO_START", "DOWN_TO_ONE", "UP_FROM_ONE", "EveryAuto", "auto_every"]

#: The interval ``auto`` starts with: the model in the background, so frames are shown
#: from the first one on while the first runs are measured.
AUTO_START = 2
HEADROOM = 1.25
SETTLE_RUNS = 4
#: The band around the 1 <-> 2 boundary (0.5), in frame intervals of model time.
DOWN_TO_ONE, UP_FROM_ONE = 0.4, 0.6
_WEIGHT = 0.2


def auto_every(model_seconds: float, frame_seconds: float, headroom: float = HEADROOM) -> int:
    """The model interval for a model taking ``model_seconds`` per frame at one frame every ``frame_seconds``."""
    if frame_seconds <= 0 or model_seconds <= 0.5 * frame_seconds:
        return 1
    return max(2, math.ceil(headroom * model_seconds / frame_seconds))


class EveryAuto:
    """Running measurements and the interval they call for (one per live session).

    :meth:`frames` is fed by the render thread, :meth:`model` by whichever thread ran the
    model (the float assignments are atomic under the GIL; a stale read only delays a
    change by a frame).
    """

    def __init__(self, start: int = AUTO_START) -> None:
        self.every = start
        self.model_seconds: float | None = None  # per frame
        self.frame_seconds: float | None = None
        self._last_time: float | None = None
        self._runs_since_change = 0

    def frames(self, times: Sequence[float]) -> None:
        """Frame presentation times (seconds), in order; gaps of a second or more (a pause,
        a loop back to the start) are not intervals."""
        for t in times:
            if self._last_time is not None and 0 < t - self._last_time < 1.0:
                self.frame_seconds = _ema(self.frame_seconds, t - self._last_time)
            self._last_time = t

    def model(self, seconds: float, frames: int = 1) -> None:
        """One model run of ``seconds`` for ``frames`` frames."""
        if seconds > 0 and frames > 0:
            self.model_seconds = _ema(self.model_seconds, seconds / frames)
            self._runs_since_change += 1

    def choice(self) -> int:
        """The interval to use now (``every`` updated when it should change)."""
        if self.model_seconds is None or self.frame_seconds is None:
            return self.every
        want = auto_every(self.model_seconds, self.frame_seconds)
        ratio = self.model_seconds / self.frame_seconds if self.frame_seconds > 0 else 0.0
        if self.every == 1 and ratio <= UP_FROM_ONE:
            want = 1  # inside the band: stay in step
        elif self.every > 1 and want == 1 and ratio >= DOWN_TO_ONE:
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
