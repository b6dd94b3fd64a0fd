"""Temporal smoothing against a float64 EMA reference, hysteresis, resets."""

from __future__ import annotations

import math

import numpy as np
import torch

from camvideo.render import TemporalSmoother


def test_off_is_identity() -> None:
    s = TemporalSmoother(0)
    maps = torch.randn(3, 4, 5)
    out, bounds = s.smooth(maps, [0.0, 0.1, 0.2])
    assert bounds is None and torch.equal(out, maps)
    logits = torch.randn(3, 10)
    assert torch.equal(s.select(logits, [0, 0.1, 0.2]), logits.argmax(1))


def test_map_ema_follows_time_not_frames() -> None:
    tau = 0.3
    times = [0.0, 0.04, 0.05, 0.25, 0.26, 1.0]  # uneven gaps, as with dropped frames
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(len(times), 3, 4))
    s = TemporalSmoother(tau)
    out, bounds = s.smooth(torch.tensor(maps[:2], dtype=torch.float32), times[:2])
    out2, bounds2 = s.smooth(torch.tensor(maps[2:], dtype=torch.float32), times[2:])
    got = torch.cat([out, out2]).numpy()
    got_bounds = torch.cat([bounds, bounds2]).numpy()
    ref = maps[0].copy()
    lo, hi = ref.min(), ref.max()
    for i, t in enumerate(times):
        if i:
            a = 1 - math.exp(-(t - times[i - 1]) / tau)
            ref = ref + a * (maps[i] - ref)
            lo, hi = lo + a * (ref.min() - lo), hi + a * (ref.max() - hi)
        np.testing.assert_allclose(got[i], ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_bounds[i], [lo, hi], rtol=1e-5, atol=1e-6)


def test_time_going_back_starts_afresh() -> None:
    s = TemporalSmoother(1.0)
    s.smooth(torch.zeros(2, 2, 2), [0.0, 0.5])
    fresh = torch.ones(1, 2, 2) * 7
    out, bounds = s.smooth(fresh, [0.1])  # a loop back to the start
    assert torch.equal(out, fresh) and bounds[0].tolist() == [7.0, 7.0]


def test_class_hysteresis_stops_flicker_but_follows_real_change() -> None:
    s = TemporalSmoother(0.5, switch_ratio=1.25)
    n = 60
    times = [i / 30 for i in range(n)]
    probs = np.full((n, 4), 0.05)
    probs[:, 0], probs[:, 1] = 0.44, 0.46  # nearly tied: raw top-1 would be class 1 throughout
    probs[::2, 0], probs[::2, 1] = 0.47, 0.43  # ... and flips every other frame
    logits = torch.tensor(np.log(probs), dtype=torch.float32)
    chosen = s.select(logits, times).tolist()
    raw = logits.argmax(1).tolist()
    assert sum(a != b for a, b in zip(raw, raw[1:])) == n - 1
    assert sum(a != b for a, b in zip(chosen, chosen[1:])) == 0
    # a real, sustained change wins within a few time constants
    probs2 = np.full((n, 4), 0.05)
    probs2[:, 2] = 0.85
    later = [2.0 + i / 30 for i in range(n)]
    chosen2 = s.select(torch.tensor(np.log(probs2), dtype=torch.float32), later).tolist()
    assert chosen2[-1] == 2 and chosen2.index(2) < 30
