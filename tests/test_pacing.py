"""``--every auto``: the model interval picked from measured times (camvideo.jobs.pacing),
its formula against hand-computed values and in a real live session with a model made slow
on purpose (its time has a floor: the added sleep; never a ceiling)."""

from __future__ import annotations

import math
import threading
import time

import pytest
import torch

from camvideo.cli import build_parser
from camvideo.jobs import LiveOptions, LiveSession
from camvideo.jobs.pacing import DOWN_TO_ONE, SETTLE_RUNS, UP_FROM_ONE, EveryAuto, auto_every
from tests.live_helpers import CATS, tiny_explainer


def test_auto_every_formula() -> None:
    frame = 1 / 30
    assert auto_every(0.005, frame) == 1  # a GPU: every frame, in step
    assert auto_every(0.8 * frame, frame) == 1  # the boundary: a step in at most 80 % of a frame interval
    assert auto_every(0.81 * frame, frame) == 2
    assert auto_every(0.250, frame) == math.ceil(1.25 * 0.250 * 30) == 10  # 250 ms on a CPU core at 30 fps
    assert auto_every(0.100, 1 / 25) == math.ceil(1.25 * 0.100 * 25) == 4
    # N from the background model's time (fewer threads: slower), 1 from the step's
    assert auto_every(0.030, frame, background_seconds=0.060) == math.ceil(1.25 * 0.060 * 30) == 3
    assert auto_every(0.020, frame, background_seconds=0.060) == 1


def test_every_auto_follows_measurements_and_settles() -> None:
    auto = EveryAuto()
    assert auto.choice() == 2  # nothing measured yet: the start value
    auto.frames([i / 30 for i in range(10)])
    assert auto.frame_seconds == pytest.approx(1 / 30)
    auto.model(0.250, background=True)
    assert auto.choice() == 10  # far from 2: at once
    for _ in range(SETTLE_RUNS - 1):
        auto.model(0.300, background=True)  # EMA 0.25 -> ~0.28: 11 wanted, a small change waits for the runs to settle
        assert auto.choice() == 10
    auto.model(0.300, background=True)
    assert auto.choice() == math.ceil(1.25 * auto.model_seconds * 30) == 11
    auto.frames([5.0, 5.0 + 1 / 30])  # a jump of seconds (a loop, a pause) is not an interval
    assert auto.frame_seconds == pytest.approx(1 / 30)
    fast = EveryAuto()
    fast.frames([0, 1 / 30])
    fast.model(0.004, frames=2)  # one in-step batch of two frames
    assert fast.choice() == 1


def test_every_auto_paces_a_source_slower_than_one_frame_a_second() -> None:
    """A time-lapse camera (a frame every 2.5 s): its intervals are all long, so they are
    the interval (they used to be skipped as pauses, and auto stayed at 2 for ever)."""
    auto = EveryAuto()
    auto.frames([2.5 * i for i in range(4)])
    assert auto.frame_seconds == pytest.approx(2.5)
    auto.model(0.3, background=True)  # a slow model is still far faster than the source
    assert auto.choice() == 1
    # ...while on a 30 fps source a pause of a few seconds is not an interval
    auto = EveryAuto()
    auto.frames([0.0, 1 / 30, 2 / 30, 7.0, 7 + 1 / 30])
    assert auto.frame_seconds == pytest.approx(1 / 30)


def test_every_auto_compares_like_times_in_step_and_in_the_background() -> None:
    """In step a frame costs the model (all threads) plus the drawing; in the background the
    model runs with fewer threads. Both are kept apart and compared as what they are.

    30 fps (33.3 ms). In the background: model 40 ms with one thread, drawing 4 ms. With the
    thread ratio 2 a step would take 40/2 + 4 = 24 ms <= 0.7 x 33.3 = 23.3? No: it stays at 2.
    With drawing 2 ms: 22 ms, so it goes in step. Once in step, the measured step model
    (26 ms: threads do not scale perfectly) replaces the estimate: 26 + 2 = 28 ms is
    inside the band (<= 0.9 x 33.3 = 30 ms), so it stays; 30 ms + 2 ms leaves it."""
    frame = 1 / 30
    for render, want in ((0.004, 2), (0.002, 1)):
        auto = EveryAuto(thread_ratio=2.0)
        auto.frames([i * frame for i in range(10)])
        for _ in range(SETTLE_RUNS):
            auto.model(0.040, background=True)
            auto.render(render)
            auto.choice()
        assert auto.step_seconds == pytest.approx(0.040 / 2 + render)
        assert auto.choice() == want, render
    assert auto.every == 1
    for _ in range(3 * SETTLE_RUNS):
        auto.model(0.026)  # in step, all threads
        auto.render(0.002)
        assert auto.choice() == 1
    assert auto.speedup == pytest.approx(0.040 / 0.026, rel=0.02)  # measured, no longer the thread ratio
    assert auto.step_seconds == pytest.approx(0.028, rel=0.02)
    for _ in range(30):
        auto.model(0.031)
        auto.choice()
    assert auto.every == 2  # 33 ms a step: past the band
    # the background model's time, not measured since, follows the model in step: 40 ms
    # then, times how much slower the model in step has become since (26 ms -> ~31 ms)
    assert auto.model_seconds == pytest.approx(0.040 * auto.step_model / 0.026, rel=1e-9)
    assert auto.step_model == pytest.approx(0.031, rel=0.01)


def test_every_auto_estimates_the_mode_not_running_from_the_one_running() -> None:
    """A busy machine: the model takes 18 ms in the background (one thread) but 29 ms in step
    (two threads waiting on each other's cores), 4 ms to draw, at 30 fps. In step a frame
    takes 33 ms, past the band: back to 2, and it stays there while the machine stays as
    busy (no flipping: the step's 29 ms is remembered). When the machine becomes quieter
    and the background model falls to 9 ms, the step estimate falls with it (29 x 9/18 +
    4 = 18.5 ms, under 0.7 x 33 ms) and auto goes back in step; an old measurement of the
    other mode never holds the choice for good."""
    frame = 1 / 30
    auto = EveryAuto(thread_ratio=2.0)
    auto.frames([i * frame for i in range(10)])
    for _ in range(SETTLE_RUNS):
        auto.model(0.018, background=True)
        auto.render(0.004)
        auto.choice()
    assert auto.step_seconds == pytest.approx(0.018 / 2 + 0.004) and auto.every == 1  # thread ratio: in step
    for _ in range(2 * SETTLE_RUNS):
        auto.model(0.029)
        auto.choice()
    assert auto.every == 2 and auto.step_seconds == pytest.approx(0.033, rel=0.01)
    for _ in range(10 * SETTLE_RUNS):  # as busy as before: it stays in the background
        auto.model(0.018, background=True)
        assert auto.choice() == 2
    assert auto.step_seconds == pytest.approx(0.029 * auto.background_model / 0.018 + 0.004, rel=1e-6)
    for _ in range(10 * SETTLE_RUNS):  # quieter
        auto.model(0.009, background=True)
        auto.choice()
    assert auto.every == 1
    assert auto.step_seconds == pytest.approx(0.029 * auto.background_model / 0.018 + 0.004, rel=0.01)


def test_every_auto_does_not_flip_at_the_step_boundary_but_still_switches() -> None:
    """A step taking 0.8 frame interval with 10 % jitter: without the band (down to 1 below
    0.7, up from 1 above 0.9) the choice between 1 and 2 flipped every few frames (each flip
    changes torch's thread limit). With it, it settles once and stays; a real change (0.5
    or 1.1 frame intervals) still switches after the settling runs."""
    import random

    frame = 1 / 30
    rng = random.Random(12)
    for start in (1, 2):
        auto = EveryAuto(start)
        auto.frames([i * frame for i in range(10)])
        choices = []
        for _ in range(300):
            auto.model(0.8 * frame * rng.uniform(0.9, 1.1), background=start > 1)
            choices.append(auto.choice())
        flips = sum(a != b for a, b in zip(choices, choices[1:]))
        assert flips == 0 and set(choices) == {start}
    assert (DOWN_TO_ONE, UP_FROM_ONE) == (0.7, 0.9)
    auto = EveryAuto(2)
    auto.frames([i * frame for i in range(10)])
    for _ in range(30):
        auto.model(0.5 * frame * rng.uniform(0.9, 1.1), background=True)
        auto.choice()
    assert auto.choice() == 1  # well below the band: in step
    for _ in range(30):
        auto.model(1.1 * frame * rng.uniform(0.95, 1.05))
        auto.choice()
    assert auto.choice() == 2  # well above it: back in the background
    runs = 0
    auto = EveryAuto(1)
    auto.frames([i * frame for i in range(10)])
    auto.model(0.5 * frame)
    while auto.choice() == 1:  # a change across the band waits for the settling runs, like any other
        auto.model(1.1 * frame)
        runs += 1
        assert runs < 50
    assert runs >= SETTLE_RUNS - 1


def test_cli_every_auto_is_the_live_default() -> None:
    parser = build_parser()
    assert parser.parse_args(["live"]).every == 0 == LiveOptions().every
    assert parser.parse_args(["live", "--every", "auto"]).every == 0
    assert parser.parse_args(["live", "--every", "3"]).every == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["live", "--every", "0"])


@pytest.mark.timeout(120)
def test_live_session_picks_the_interval_from_a_slow_model() -> None:
    """A model that takes at least 0.2 s on a 30 fps clip: auto runs it in the background, on
    frames far enough apart that it is busy at most 80 % of the time, and shows the frames
    between. (N counts the frames the render thread gets; on a busy machine some are dropped
    before it, so N x the measured interval, not N alone, is what the model time bounds.)"""
    session = LiveSession(str(CATS), LiveOptions(every=0, smooth=0.25), explainer=tiny_explainer(delay=0.2)).start()
    try:
        assert session.display.get(60.0) is not None, f"no frame: {session.state} {session.error!r}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and session.stats().model_runs < 8:
            session.display.get(0.5)
        stats, pacing = session.stats(), session.pacing
    finally:
        assert session.stop(2.0)
    assert stats.every_auto and stats.model_runs >= 8 and pacing is not None
    assert pacing.model_seconds >= 0.2 * 0.99 and 1 / 30 * 0.99 <= pacing.frame_seconds < 1.0
    # the interval the measurements call for, or the last one while a small change settles
    want = auto_every(pacing.model_seconds, pacing.frame_seconds)
    assert stats.every == pacing.every and (stats.every == want or abs(stats.every - want) * 2 <= want)
    assert stats.every >= 2 and stats.every * pacing.frame_seconds >= 0.2 * 0.99  # never more runs than fit
    assert stats.frames_shown > 2 * stats.model_runs  # the display is not tied to the model


class ThreadClock:
    """A fake ``time`` module for the live code: ``perf_counter`` is a per-thread clock that
    moves only when :meth:`spend` is called in that thread (what the fake model and the fake
    drawing cost), so the measured times are exact whatever the machine's speed."""

    def __init__(self) -> None:
        self._local = threading.local()
        self.monotonic, self.sleep = time.monotonic, time.sleep

    def perf_counter(self) -> float:
        return getattr(self._local, "now", 0.0)

    def spend(self, seconds: float) -> None:
        self._local.now = self.perf_counter() + seconds


@pytest.mark.timeout(120)
def test_live_session_times_the_model_alone_in_step_and_in_the_background(monkeypatch) -> None:
    """Issue 19: in step, auto timed the model and the drawing together, in the background
    the model alone. With a fake clock the model costs 10 ms a frame and the drawing 4 ms:
    both modes must report 10 ms for the model and 4 ms for the drawing, and with the thread
    ratio 2 a step (10/2 + 4 = 9 ms, then 10 + 4 = 14 ms, under 0.7 x 33 ms) goes in step."""
    import camvideo.jobs.live
    import camvideo.jobs.stage
    from camvideo.render import Renderer

    clock = ThreadClock()
    monkeypatch.setattr(camvideo.jobs.stage, "time", clock)
    monkeypatch.setattr(camvideo.jobs.live, "time", clock)
    draw = Renderer.render

    def slow_draw(self, images, *args, **kwargs):
        clock.spend(0.004 * images.shape[0])
        return draw(self, images, *args, **kwargs)

    monkeypatch.setattr(Renderer, "render", slow_draw)
    explainer = tiny_explainer()
    explain = explainer.explain

    def slow_model(frames, target=None):
        clock.spend(0.010 * frames.shape[0])
        return explain(frames, target=target)

    explainer.explain = slow_model  # type: ignore[method-assign]
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the background model gets 1: the thread ratio is 2
    session = LiveSession(str(CATS), LiveOptions(every=0, model_threads=1), explainer=explainer).start()
    try:
        assert session.display.get(60.0) is not None, f"no frame: {session.state} {session.error!r}"
        pacing = session.pacing
        assert pacing is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (pacing.background_model and pacing.every == 1):
            session.display.get(0.5)
        background, background_render = pacing.background_model, pacing.render_seconds
        while time.monotonic() < deadline and not (pacing.step_model and explainer.calls >= 20):  # type: ignore[attr-defined]
            session.display.get(0.5)
        stats = session.stats()
    finally:
        assert session.stop(2.0)
        torch.set_num_threads(before)
    assert background == pytest.approx(0.010, abs=1e-9) and background_render == pytest.approx(0.004, abs=1e-9)
    assert pacing.step_model == pytest.approx(0.010, abs=1e-9)  # the model alone, not 14 ms
    assert pacing.render_seconds == pytest.approx(0.004, abs=1e-9)
    assert stats.every == 1 and stats.every_auto
