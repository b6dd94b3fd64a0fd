"""The threaded pipeline: order, no loss, live dropping, and faults injected into every stage."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

from camvideo.pipeline import Pipeline, StageStalled
from camvideo.types import Frame


def frames(n: int, delay: float = 0.0):
    for i in range(n):
        if delay:
            time.sleep(delay)
        yield Frame(index=i, image=np.zeros((2, 2, 3), np.uint8), pts=i, time=i / 30, captured=time.monotonic())


def camvideo_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("camvideo-") and t.is_alive()]


class Boom(RuntimeError):
    pass


def test_file_policy_keeps_every_frame_in_order() -> None:
    rng = random.Random(0)
    out: list[int] = []
    sizes: list[int] = []

    def process(batch):
        sizes.append(len(batch))
        time.sleep(rng.random() * 0.002)
        return [f.index * 10 for f in batch]

    def sink(value):
        time.sleep(rng.random() * 0.001)
        out.append(value)

    stats = Pipeline(frames(203), process, sink, batch_size=8).run()
    assert out == [i * 10 for i in range(203)]
    assert stats.frames_read == stats.frames_processed == stats.frames_written == 203
    assert sizes == [8] * 25 + [3]  # file batches wait to be full
    assert stats.frames_dropped == 0 and not camvideo_threads()


def test_live_policy_drops_stale_frames_and_never_waits_to_fill() -> None:
    seen: list[int] = []

    def slow(batch):
        time.sleep(0.05)  # 20 fps engine against a 200 fps source
        return [f.index for f in batch]

    stats = Pipeline(frames(100, delay=0.005), slow, seen.append, batch_size=4, policy="live").run()
    assert seen == sorted(seen) and seen[-1] == 99  # order kept, the newest frame always shown
    assert stats.frames_dropped > 50
    assert stats.frames_written + stats.frames_dropped == 100
    assert not camvideo_threads()


STAGES = ["source", "engine", "sink"]


def faulty(stage: str, fault: BaseException | None = None, stall: float = 0.0):
    """Source, process and sink with ``fault`` raised (or a stall) at the 5th frame of ``stage``."""

    def hit(i: int) -> None:
        if i == 5:
            if stall:
                time.sleep(stall)
            if fault is not None:
                raise fault

    def source():
        for frame in frames(1000):
            if stage == "source":
                hit(frame.index)
            yield frame

    def process(batch):
        if stage == "engine":
            for f in batch:
                hit(f.index)
        return [f.index for f in batch]

    written: list[int] = []

    def sink(value):
        if stage == "sink":
            hit(value)
        written.append(value)

    return source(), process, sink, written


@pytest.mark.timeout(20)
@pytest.mark.parametrize("stage", STAGES)
def test_exception_in_any_stage_stops_all_and_reaches_caller(stage: str) -> None:
    source, process, sink, written = faulty(stage, Boom(f"injected in {stage}"))
    start = time.monotonic()
    with pytest.raises(Boom, match=stage):
        Pipeline(source, process, sink, batch_size=2).run()
    assert time.monotonic() - start < 5
    assert len(written) <= 5
    assert not camvideo_threads()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("stage", STAGES)
def test_keyboard_interrupt_in_any_stage_stops_cleanly(stage: str) -> None:
    source, process, sink, written = faulty(stage, KeyboardInterrupt())
    stats = Pipeline(source, process, sink, batch_size=2).run()
    assert stats.interrupted
    assert written == list(range(len(written))) and len(written) <= 5
    assert not camvideo_threads()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("stage", STAGES)
def test_stall_in_any_stage_is_reported(stage: str) -> None:
    source, process, sink, _ = faulty(stage, stall=3.0)
    start = time.monotonic()
    with pytest.raises(StageStalled, match=rf"no progress for \d+ s \(the {stage} stage is stuck in one call\)"):
        Pipeline(source, process, sink, batch_size=2, stall_timeout=0.5, grace=0.2).run()
    assert time.monotonic() - start < 2.5  # reported long before the stalled call returns
    time.sleep(3.5)  # the stalled call returns, sees the stop flag, and its thread ends
    assert not camvideo_threads()


@pytest.mark.timeout(20)
def test_ctrl_c_in_main_thread_stops_stages() -> None:
    import _thread

    written: list[int] = []

    def sink(value):
        written.append(value)
        if value == 10:
            threading.Timer(0.05, _thread.interrupt_main).start()
        time.sleep(0.01)

    stats = Pipeline(frames(10_000), lambda b: [f.index for f in b], sink, batch_size=4).run()
    assert stats.interrupted and 10 <= len(written) < 10_000
    assert not camvideo_threads()
