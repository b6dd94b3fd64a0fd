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


@pytest.mark.timeout(60)
def test_live_policy_drops_stale_frames_and_never_waits_to_fill() -> None:
    """The engine is held on its first batch until the source has read all 100 frames: a
    live channel keeps only the newest frame, so 98 stale ones are dropped, whatever the
    speed of the machine. The first batch is frame 0 alone: live batches never wait to fill."""
    first_batch = threading.Event()
    all_read = threading.Event()
    batches: list[list[int]] = []
    seen: list[int] = []

    def source():
        for frame in frames(100):
            yield frame
            if frame.index == 0:  # the next frame comes only once the engine has a batch
                assert first_batch.wait(30), "the engine waited for more than frame 0"
        all_read.set()  # the reader has asked past the last frame: all 100 are in the channel

    def held(batch):
        batches.append([f.index for f in batch])
        first_batch.set()
        if len(batches) == 1:
            assert all_read.wait(30), "the source did not run ahead of a held engine"
        return [f.index for f in batch]

    stats = Pipeline(source(), held, seen.append, batch_size=4, policy="live").run()
    assert batches == [[0], [99]]  # never waited to fill; then only the newest frame was left
    assert seen == [0, 99]  # order kept, the newest frame always shown
    assert stats.frames_dropped == 98 and stats.frames_read == 100
    assert stats.frames_written + stats.frames_dropped == 100
    assert not camvideo_threads()


STAGES = ["source", "engine", "sink"]


def faulty(stage: str, fault: BaseException | None = None, stall: threading.Event | None = None):
    """Source, process and sink with ``fault`` raised at the 5th frame of ``stage``, or a
    stall there: the call blocks until ``stall`` is set."""

    def hit(i: int) -> None:
        if i == 5:
            if stall is not None:
                stall.wait(30)  # (a pipeline that never reports it then ends, and the test fails)
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


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("stage", STAGES)
def test_stall_in_any_stage_is_reported(stage: str) -> None:
    release = threading.Event()  # the stuck call returns only when the test lets it
    source, process, sink, _ = faulty(stage, stall=release)
    # 2 s without progress: far more than a loaded machine holds back a thread between frames
    timeout = 2.0
    start = time.monotonic()
    try:
        with pytest.raises(StageStalled, match=rf"no progress for \d+ s \(the {stage} stage is stuck in one call\)"):
            Pipeline(source, process, sink, batch_size=2, stall_timeout=timeout, grace=0.2).run()
        # reported while the call is still stuck (it cannot return before `release`), and not
        # before the timeout
        assert not release.is_set() and time.monotonic() - start >= timeout
    finally:
        release.set()
    # the stuck call returns, sees the stop flag, and its thread ends
    assert wait_for(lambda: not camvideo_threads(), 30), camvideo_threads()


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
