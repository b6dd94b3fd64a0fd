"""Temporal smoothing of maps, normalisation bounds and the top-1 class.

Per-frame CAMs flicker: the map's min/max jump, and two close classes trade places.
Three exponential moving averages with one time constant τ (seconds, not frames, so
dropped or uneven frames weigh what their time gap says):

    a_t = 1 - exp(-Δt / τ)
    m̄_t = m̄_{t-1} + a_t (m_t - m̄_{t-1})                           (the map)
    [lo, hi]_t = EMA of [min m̄_t, max m̄_t]                          (normalisation bounds)
    p̄_t = EMA of softmax(logits_t)                                  (class probabilities)

Class hysteresis: the shown class c* changes only when another class's smoothed
probability beats p̄[c*] by the factor ``switch_ratio``. A time that goes backwards (a
looped file, a seek) starts afresh.

A held class is let go at once when its own probability collapses: when the frame's top
class beats it by ``release_ratio`` (20: far past the hysteresis's 1.25; a scene cut
takes a class from 30 % to 0.03 % in one frame). That frame is a cut: every EMA (the
probabilities, the map, its bounds) starts afresh there, so no label is left showing a
class at 0 % while the EMA decays.

One clock: :attr:`TemporalSmoother.time` is the time of the last frame either EMA has
taken in. :meth:`~TemporalSmoother.select` and :meth:`~TemporalSmoother.smooth` each
advance it; when both are called for the same frames (select, then smooth), the second
call reuses the first's weights, so the two EMAs always see the same Δt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


class TemporalSmoother:
    """Time-based EMA smoothing for one stream of frames (one per video or live source)."""

    def __init__(self, tau: float, switch_ratio: float = 1.25, release_ratio: float = 20.0) -> None:
        if tau < 0:
            raise ValueError(f"smoothing time constant must be >= 0 seconds, not {tau}")
        if release_ratio < switch_ratio:
            raise ValueError(f"release_ratio ({release_ratio}) must be at least switch_ratio ({switch_ratio})")
        self.tau = float(tau)
        self.switch_ratio = float(switch_ratio)
        self.release_ratio = float(release_ratio)
        self.reset()

    def reset(self) -> None:
        self.time: float | None = None  # the clock: time of the last frame taken in
        self._batch: tuple[tuple[float, ...], list[float]] | None = None  # the last frames' times and weights
        self._probs: torch.Tensor | None = None
        self._class: int | None = None
        self._map: torch.Tensor | None = None
        self._bounds: torch.Tensor | None = None

    @property
    def enabled(self) -> bool:
        return self.tau > 0

    def _advance(self, times: Sequence[float]) -> list[float]:
        """The EMA weight a_t of each frame, moving the clock to the last one.

        Frames the clock has just taken in (the same batch, seen by the other EMA) get the
        weights they got then; 1.0 (start afresh) for the first frame and when time goes back.
        """
        key = tuple(float(t) for t in times)
        if self._batch is not None and self._batch[0] == key:
            return self._batch[1]
        weights = []
        last = self.time
        for t in key:
            if last is None or t < last:
                weights.append(1.0)
            else:
                weights.append(1.0 - math.exp(-(t - last) / self.tau) if self.tau > 0 else 1.0)
            last = t
        if key:
            self.time = key[-1]
            self._batch = (key, weights)
        return weights

    def select(self, logits: torch.Tensor, times: Sequence[float]) -> torch.Tensor:
        """The class to show for each frame (N,), with hysteresis. Call once per batch, in order."""
        if not self.enabled:
            return logits.argmax(dim=1)
        weights = self._advance(times)
        # Our state must be an ordinary tensor: an inference tensor (logits made under
        # torch.inference_mode) cannot be updated in place once outside that mode.
        with torch.inference_mode(False):
            probs = torch.softmax(logits.float(), dim=1).clone()
        chosen = []
        for i, a in enumerate(weights):
            if a != 1.0 and self._class is not None and self._collapsed(probs[i]):
                a = weights[i] = 1.0  # a cut: smooth() restarts the map at this frame too
            if a == 1.0 or self._probs is None or self._probs.shape != probs[i].shape:
                self._probs = probs[i].clone()
                self._class = int(self._probs.argmax())
            else:
                self._probs += a * (probs[i] - self._probs)
                best = int(self._probs.argmax())
                if best != self._class and self._probs[best] > self.switch_ratio * self._probs[self._class]:
                    self._class = best
            chosen.append(self._class)
        return torch.tensor(chosen, device=logits.device, dtype=torch.long)

    def _collapsed(self, probs: torch.Tensor) -> bool:
        """Whether the held class's probability in this frame is far below the frame's top."""
        if self._probs is None or self._probs.shape != probs.shape:
            return False
        held = float(probs[self._class])
        return float(probs.max()) > self.release_ratio * held

    def smooth(self, maps: torch.Tensor, times: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Smoothed maps (N, h, w) and normalisation bounds (N, 2), or (maps, None) when off.

        Uses the weights of the preceding :meth:`select` for the same frames when there
        was one, so both EMAs see the same clock.
        """
        if not self.enabled:
            return maps, None
        weights = self._advance(times)
        out = torch.empty_like(maps, dtype=torch.float32)
        bounds = torch.empty(maps.shape[0], 2, device=maps.device)
        for i, a in enumerate(weights):
            m = maps[i].float()
            if a == 1.0 or self._map is None or self._map.shape != m.shape:
                self._map = m.clone()
                self._bounds = torch.stack([m.min(), m.max()])
            else:
                self._map += a * (m - self._map)
                self._bounds += a * (torch.stack([self._map.min(), self._map.max()]) - self._bounds)
            out[i] = self._map
            bounds[i] = self._bounds
        return out, bounds
