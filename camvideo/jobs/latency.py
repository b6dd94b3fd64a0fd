"""Capture-to-display latency and display rate, as the live app and its benchmark measure them."""

from __future__ import annotations

import collections
import time
from collections.abc import Sequence

__all__ = ["LatencyMeter", "percentile"]


class LatencyMeter:
    """Capture-to-display latency percentiles and display rate over a sliding window.

    Fed by the one thread that displays (``record``); read by the same thread.
    """

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._samples: collections.deque[tuple[float, float]] = collections.deque()  # (shown, latency)
        self.count = 0

    def record(self, captured: float, shown: float | None = None) -> float:
        shown = time.monotonic() if shown is None else shown
        latency = max(0.0, shown - captured)
        self._samples.append((shown, latency))
        self.count += 1
        self._trim(shown)
        return latency

    def _trim(self, now: float) -> None:
        while self._samples and self._samples[0][0] < now - self.window:
            self._samples.popleft()

    def percentile(self, q: float) -> float | None:
        """Latency (seconds) at percentile ``q`` (0..100) in the window; None when empty."""
        self._trim(time.monotonic())
        values = sorted(lat for _, lat in self._samples)
        if not values:
            return None
        rank = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
        return values[rank]

    def fps(self) -> float:
        """Frames displayed per second over the window."""
        self._trim(time.monotonic())
        if len(self._samples) < 2:
            return 0.0
        span = self._samples[-1][0] - self._samples[0][0]
        return (len(self._samples) - 1) / span if span > 0 else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of a non-empty sequence (the benchmark's and tests' helper)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]
